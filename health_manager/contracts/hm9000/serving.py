"""What the HM9000 contract's two HTTP servers share: a site that logs requests at debug
only, and a service that binds one configured port at start."""

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from health_manager.web.status_server import StatusPortError


class PortError(StatusPortError):
    """A configured port cannot be listened on; twistd start-up reports it as one line and
    exits 1, as for the status port (tap.py)."""


class QuietSite(Site):
    """Access log at debug: DEAs post every heartbeat interval, CCs ask on every listing."""

    access_log = Logger()

    def log(self, request):
        self.access_log.debug(
            "{method} {path} {code}", method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"), code=request.code)


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
