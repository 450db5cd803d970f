"""What the HM9000 contract's two HTTP servers share: one route each (a POST to one path,
as HM9000's servers had), the status port's quiet site (requests logged at debug only), and
a service that binds one configured port at start."""

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Request

from health_manager.web.responses import send
from health_manager.web.status_server import StatusPortError

TEXT = b"text/plain; charset=utf-8"


def refuse_other_routes(request: Request, path: bytes) -> bytes | None:
    """The answer to anything but a POST to `path`, as Go's mux gave it (404 for another
    path, 405 for another method); None for the one route served."""
    if request.path != path:
        request.setResponseCode(404)
        return send(request, b"404 page not found\n", TEXT)
    if request.method != b"POST":
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return send(request, b"", TEXT)
    return None


class PortError(StatusPortError):
    """A configured port cannot be listened on; twistd start-up reports it as one line and
    exits 1, as for the status port (tap.py)."""


class PortService(Service):
    """Listens with `listen(port, address)` on start (port 0: a free one, then in `port`).
    `key` is the config key of the port, named by a PortError; `what` names the server in
    the log."""

    log = Logger()

    def __init__(self, listen: Callable[[int, str], IListeningPort], key: str, address: str,
                 port: int, what: str) -> None:
        self._listen_on = listen
        self._key = key
        self._address = address
        self._requested_port = port
        self._what = what
        self.port: int | None = None
        self._listening: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # Bound before the reactor runs under twistd: a busy port stops the start at once.
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        try:
            self._listening = self._listen_on(self._requested_port, self._address)
        except CannotListenError as e:
            cause = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise PortError(f"config key {self._key!r}: cannot listen on "
                            f"{self._address}:{self._requested_port}: {cause}") from None
        self.port = self._listening.getHost().port  # type: ignore[attr-defined]
        self.log.info("{what} listening on {address}:{port}", what=self._what,
                      address=self._address, port=self.port)

    def stopService(self) -> "defer.Deferred[Any]":
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
