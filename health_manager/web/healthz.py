"""/healthz: `ok` as every VCAP component says it, and the structured view on request.

The CF collector (cloudfoundry/collector, `fetch_healthz`) counts a component healthy only
when the body, stripped and lower-cased, is `ok`; HM 2.0 and HM9000 answered so. So the
plain answer is exactly `ok` (200) while this health manager can do its job, and otherwise
503 with `unavailable: ` and the reasons, which can never read as `ok`. The JSON view
(status, nats, desired_state, actual_state, ha_role, reasons) answers `?format=json`, or a
request whose Accept header prefers application/json.
"""

from typing import TYPE_CHECKING

from twisted.web.server import Request

from health_manager.web.responses import send, send_json

if TYPE_CHECKING:
    from health_manager.web.state_view import StateView

OK_BODY = b"ok"
TEXT = b"text/plain"
JSON = "application/json"
FORMATS = ("json", "text")


class BadFormat(ValueError):
    """A `format` query parameter other than json or text; the message says so."""


def unavailable_body(reasons: list[str]) -> bytes:
    """The 503 body: one line, the reasons after a prefix, so it never reads as `ok`."""
    return ("unavailable: " + "; ".join(reasons) + "\n").encode("utf-8")


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0  # an unreadable q: the range is not counted as acceptable
            return min(max(q, 0.0), 1.0)
    return 1.0


def prefers_json(accept: str | None) -> bool:
    """True when the Accept header ranks application/json above text/plain.

    application/json must be named (a wildcard does not ask for JSON). text/plain's
    quality is that of its most specific range (text/plain, text/*, then */*); on a tie
    JSON wins only over a bare */*, so a client naming both gets the collector's text.
    """
    if not accept:
        return False
    json_q = 0.0
    text_q: dict[int, float] = {}  # specificity (2 text/plain, 1 text/*, 0 */*) -> quality
    for media_range in accept.split(","):
        kind, *params = media_range.split(";")
        kind = kind.strip().lower()
        q = _quality(params)
        if kind == JSON:
            json_q = max(json_q, q)
        elif kind in ("text/plain", "text/*", "*/*"):
            specificity = ("*/*", "text/*", "text/plain").index(kind)
            text_q[specificity] = max(text_q.get(specificity, 0.0), q)
    if json_q <= 0:
        return False
    if not text_q:
        return True
    specificity = max(text_q)
    if json_q == text_q[specificity]:
        return specificity == 0
    return json_q > text_q[specificity]


def wants_json(request: Request) -> bool:
    """`?format=json|text` decides; without it, the Accept header. Raises BadFormat."""
    values = request.args.get(b"format")
    chosen = values[0].decode("utf-8", "replace").lower() if values else ""
    if chosen == "":
        accept = request.getHeader(b"accept")
        return prefers_json(accept.decode("latin-1") if accept is not None else None)
    if chosen not in FORMATS:
        raise BadFormat(f"format must be json or text, got {chosen!r}")
    return chosen == "json"


class Healthz:
    """Renders /healthz from a StateView."""

    def __init__(self, view: "StateView") -> None:
        self._view = view

    def render(self, request: Request) -> bytes:
        # The same URL answers text or JSON by the Accept header: caches must tell them apart.
        request.setHeader(b"vary", b"Accept")
        try:
            as_json = wants_json(request)
        except BadFormat as e:
            request.setResponseCode(400)
            return send(request, f"{e}\n".encode(), TEXT)
        ok, body = self._view.health()
        if not ok:
            request.setResponseCode(503)
        if as_json:
            return send_json(request, body)
        return send(request, OK_BODY if ok else unavailable_body(body["reasons"]), TEXT)
