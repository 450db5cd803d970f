"""The status page at `/`: one self-contained HTML page (no external assets, no script),
so it works on an air-gapped foundation; it refreshes itself every `REFRESH` seconds.

It shows the foundation summary, then the unhealthy apps with each one's reason, then a
sample of the healthy ones. The apps are gathered with the same sliced scan as /v1/apps.
"""

import html
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from health_manager.web.apps_api import scan_apps
from health_manager.web.responses import finish

if TYPE_CHECKING:
    from health_manager.web.state_view import StateView

REFRESH = 5
MAX_UNHEALTHY = 200
MAX_HEALTHY = 50

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .6em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff} td,th{padding:.25em .7em;border:1px solid #ddd;
text-align:left} th{background:#f0f0f0} .num{text-align:right}
.bad{color:#a40000;font-weight:600} .ok{color:#1a7f37;font-weight:600}
.summary td:first-child{color:#555} .note{color:#666}
"""


def _e(value):
    return html.escape("" if value is None else str(value))


def _figure(value):
    return "n/a" if value is None else _e(value)


def _word(value, good):
    css = "ok" if value in good else "bad"
    return f'<span class="{css}">{_e(value)}</span>'


def render_page(summary: dict[str, Any], health_ok: bool, reasons: list[str],
                unhealthy: list[dict[str, Any]], healthy: list[dict[str, Any]],
                more_unhealthy: bool, more_healthy: bool) -> str:
    """The page's HTML (str) from a StateView summary and two lists of app entries."""
    rows = [
        ("health", _word("ok" if health_ok else "unavailable", ("ok",))
         + "".join(f"<br>{_e(r)}" for r in reasons)),
        ("HA role", _e(summary["ha_role"])),
        ("NATS", _word(summary["nats"], ("connected",))),
        ("desired state", _word(summary["desired_state"], ("fresh",))
         + ("" if summary["desired_state_age"] is None
            else f' ({_e(summary["desired_state_age"])} s old)')),
        ("actual state", _word(summary["actual_state"], ("fresh",))),
        ("apps", _e(summary["apps"])),
        ("instances", _figure(summary["instances"])),
        ("running", _figure(summary["running"])),
        ("missing", _figure(summary["missing"])),
        ("recent crashes", _figure(summary["crashed"])),
        ("flapping", _figure(summary["flapping"])),
        ("queue", _e(summary["queue_length"])),
    ]
    if summary["not_acting"]:
        rows.insert(1, ("not acting", f'<span class="bad">{_e(summary["not_acting"])}</span>'))
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        "<title>health_manager status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>health_manager status</h1>",
        '<table class="summary" id="summary">',
        *(f'<tr><td>{name}</td><td id="summary-{name.replace(" ", "-")}">{value}</td></tr>'
          for name, value in rows),
        "</table>",
        f'<h2>Unhealthy apps ({len(unhealthy)}{"+" if more_unhealthy else ""})</h2>',
        _app_table("unhealthy", unhealthy, with_reason=True),
        f'<h2>Healthy apps (first {len(healthy)}{"+" if more_healthy else ""})</h2>',
        _app_table("healthy", healthy, with_reason=False),
        f'<p class="note">Refreshes every {REFRESH} s. JSON: <code>/v1/apps</code>, '
        "<code>/v1/apps/GUID</code>, <code>/healthz?format=json</code>, <code>/varz</code>; "
        "<code>/healthz</code> (<code>ok</code> or why not), <code>/metrics</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _app_table(table_id, entries, with_reason):
    if not entries:
        return f'<p id="{table_id}" class="note">none</p>'
    head = ["app", "state", "desired", "running", "missing", "crashed", "flapping", "extra",
            "next restart"] + (["reason"] if with_reason else [])
    rows = [f'<table id="{table_id}"><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>"]
    for e in entries:
        restart = "" if e["next_restart_in"] is None else f'{e["next_restart_in"]} s'
        cells = [f'<td>{_e(e["app"])}</td>', f'<td>{_e(e["state"])}</td>']
        cells += [f'<td class="num">{_e(e[k])}</td>' for k in (
            "desired_instances", "running", "missing", "crashed", "flapping", "extra")]
        cells.append(f"<td>{_e(restart)}</td>")
        if with_reason:
            cells.append(f'<td class="reason">{_e(e["reason"])}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


class StatusPage:
    """Renders `/` from a StateView, gathering apps a slice per reactor turn."""

    log = Logger()

    def __init__(self, view: "StateView", reactor: IReactorTime) -> None:
        self._view = view
        self._reactor = reactor

    def render(self, request: Request) -> int:
        unhealthy: list[dict[str, Any]] = []
        healthy: list[dict[str, Any]] = []
        more = {"unhealthy": False, "healthy": False}

        def visit(entry):
            if entry["unhealthy"]:
                if len(unhealthy) < MAX_UNHEALTHY:
                    unhealthy.append(entry)
                else:
                    more["unhealthy"] = True
            elif len(healthy) < MAX_HEALTHY:
                healthy.append(entry)
            else:
                more["healthy"] = True
            return True

        scan = scan_apps(self._view, self._reactor, 0, visit)
        request.notifyFinish().addErrback(lambda _: scan.cancel())

        def done(_):
            ok, body = self._view.health()
            page = render_page(self._view.summary(), ok, body["reasons"], unhealthy, healthy,
                               more["unhealthy"], more["healthy"])
            finish(request, page.encode("utf-8"), b"text/html; charset=utf-8")

        scan.run().addCallback(done).addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure, request):
        if failure.check(CancelledError):
            return
        self.log.failure("rendering the status page failed", failure)
        request.setResponseCode(500)
        finish(request, b"status page failed\n", b"text/plain")

