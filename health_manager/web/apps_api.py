"""The app-state API: GET /v1/apps and GET /v1/apps/GUID, JSON behind basic auth.

Owns the paging of a listing: a request walks a snapshot of the registry a slice per
reactor turn (at most `SLICE_APPS` apps or `SLICE_BUDGET` seconds, whichever comes first),
so a listing of 100k apps never blocks the reactor, and answers at most `limit` entries
with the `next` offset to continue from. Offsets follow the registry's insertion order;
apps added or forgotten between two pages may shift an entry across the page boundary.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from health_manager.web.responses import finish, json_body, send_json

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


class Scan:
    """One walk over a droplet snapshot from `start`, calling `visit(entry)` on each app's
    summary until it returns False; fires with the offset after the last app visited, or
    None once the snapshot is exhausted."""

    def __init__(self, view, reactor, start, visit, slice_apps=SLICE_APPS,
                 budget=SLICE_BUDGET):
        self._view = view
        self._reactor = reactor
        self._droplets = view.droplets()
        self._position = start
        self._visit = visit
        self._slice_apps = slice_apps
        self._budget = budget
        self._cancelled = False
        self._call = None
        self.done = defer.Deferred(lambda _: self.cancel())

    def run(self):
        self._slice()
        return self.done

    def cancel(self):
        self._cancelled = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _slice(self):
        self._call = None
        if self._cancelled:
            return
        view = self._view
        droplets = self._droplets
        seconds = self._reactor.seconds
        began = seconds()
        end = min(len(droplets), self._position + self._slice_apps)
        position = self._position
        while position < end:
            droplet = droplets[position]
            position += 1
            if view.is_current(droplet) and not self._visit(
                    view.app_summary(droplet)):
                self._finish(position if position < len(droplets) else None)
                return
            if position % _CHECK_EVERY == 0 and seconds() - began >= self._budget:
                break
        self._position = position
        if position >= len(droplets):
            self._finish(None)
            return
        self._call = self._reactor.callLater(0, self._slice)

    def _finish(self, next_position):
        if not self.done.called:
            self.done.callback(next_position)


def listing(view, reactor, start=0, limit=DEFAULT_LIMIT, unhealthy=False, **scan_options):
    """A Deferred firing with the /v1/apps body for one page."""
    apps = []

    def visit(entry):
        if not unhealthy or entry["unhealthy"]:
            apps.append(entry)
        return len(apps) < limit

    scan = Scan(view, reactor, start, visit, **scan_options)

    def body(next_position):
        return {"summary": view.summary(), "apps": apps, "next": next_position,
                "limit": limit}

    return scan.run().addCallback(body), scan


class AppsApi:
    """Renders /v1/apps (paged, filtered) and /v1/apps/GUID from a StateView."""

    log = Logger()

    def __init__(self, view, reactor):
        self._view = view
        self._reactor = reactor

    def render_list(self, request):
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

    def render_one(self, request, rest):
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
