"""The app-state API: GET /v1/apps and GET /v1/apps/GUID, JSON behind basic auth.

Owns the paging of a listing: a request walks a snapshot of the registry a slice per
reactor turn (at most `SLICE_APPS` apps or `SLICE_BUDGET` seconds, whichever comes first),
so a listing of 100k apps never blocks the reactor, and answers at most `limit` entries
with the `next` offset to continue from. Offsets follow the registry's insertion order;
apps added or forgotten between two pages may shift an entry across the page boundary.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from health_manager.slicing import Sliced
from health_manager.web.responses import finish, json_body, send_json

if TYPE_CHECKING:
    from health_manager.web.state_view import StateView

DEFAULT_LIMIT = 500
MAX_LIMIT = 2000
SLICE_APPS = 2000
SLICE_BUDGET = 0.010  # seconds of one reactor turn, half the 20 ms the issue allows
_CHECK_EVERY = 64


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


def _arg(request, name):
    values = request.args.get(name.encode())
    return None if not values else values[0].decode("utf-8", "replace")


def _whole(request, name, default, minimum, maximum):
    text = _arg(request, name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise BadQuery(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _flag(request, name):
    text = (_arg(request, name) or "").lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise BadQuery(f"{name} must be 1 or 0, got {text!r}")


def scan_apps(view: "StateView", reactor: IReactorTime, start: int,
              visit: Callable[[dict[str, Any]], bool], slice_apps: int = SLICE_APPS,
              budget: float = SLICE_BUDGET) -> "Sliced[int | None]":
    """One walk over a droplet snapshot from `start`, calling `visit(entry)` on each app's
    summary until it returns False; fires with the offset after the last app visited, or
    None once the snapshot is exhausted."""
    return Sliced(reactor, _walk(view, view.droplets(), start, visit), budget,
                  per_turn=slice_apps, check_every=_CHECK_EVERY)


def _walk(view, droplets, start, visit):
    """A step per app. The pause comes before each app but the first, so the step that
    visits the last app also ends the walk, in the same turn."""
    for position in range(start, len(droplets)):
        if position > start:
            yield
        droplet = droplets[position]
        if view.is_current(droplet) and not visit(view.app_summary(droplet)):
            return position + 1 if position + 1 < len(droplets) else None
    return None


def listing(view: "StateView", reactor: IReactorTime, start: int = 0, limit: int = DEFAULT_LIMIT,
            unhealthy: bool = False, **scan_options: Any
            ) -> tuple["defer.Deferred[dict[str, Any]]", Sliced[int | None]]:
    """A Deferred firing with the /v1/apps body for one page."""
    apps: list[dict[str, Any]] = []

    def visit(entry):
        if not unhealthy or entry["unhealthy"]:
            apps.append(entry)
        return len(apps) < limit

    scan = scan_apps(view, reactor, start, visit, **scan_options)

    def body(next_position):
        return {"summary": view.summary(), "apps": apps, "next": next_position,
                "limit": limit}

    return scan.run().addCallback(body), scan


class AppsApi:
    """Renders /v1/apps (paged, filtered) and /v1/apps/GUID from a StateView."""

    log = Logger()

    def __init__(self, view: "StateView", reactor: IReactorTime) -> None:
        self._view = view
        self._reactor = reactor

    def render_list(self, request: Request) -> bytes | int:
        try:
            start = _whole(request, "start", 0, 0, 2**62)
            limit = _whole(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            unhealthy = _flag(request, "unhealthy")
        except BadQuery as e:
            request.setResponseCode(400)
            return send_json(request, {"error": str(e)})
        app = _arg(request, "app")
        if app is not None:
            droplet = self._view.get(app)
            entries = [] if droplet is None else [self._view.app_summary(droplet)]
            entries = [e for e in entries if not unhealthy or e["unhealthy"]]
            return send_json(request, {"summary": self._view.summary(), "apps": entries,
                                       "next": None, "limit": limit})
        d, scan = listing(self._view, self._reactor, start, limit, unhealthy)
        request.notifyFinish().addErrback(lambda _: scan.cancel())
        d.addCallback(lambda body: finish(request, json_body(body), b"application/json"))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def render_one(self, request: Request, rest: str) -> bytes | int:
        detail = self._view.app_detail(rest)
        if detail is None:
            request.setResponseCode(404)
            return send_json(request, {"error": f"no app {rest} known to this health "
                                                f"manager"})
        return send_json(request, detail)

    def _failed(self, failure, request):
        if failure.check(defer.CancelledError):
            return
        self.log.failure("listing /v1/apps failed", failure)
        request.setResponseCode(500)
        finish(request, json_body({"error": failure.getErrorMessage()}), b"application/json")
