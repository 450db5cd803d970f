"""The status server: everything the status port serves, behind basic auth (PROTOCOL.md §6).

Owns the twisted.web site, the basic-auth check, the routing of /varz, /healthz, /metrics,
/v1/apps and the status page `/`, the composition of /varz (the metrics' keys plus the
VCAP::Component keys: identity, uptime, process vitals, redacted config, log counts), and
the listening address (`host`), which the Manager then announces through the Component.
"""

import base64
import binascii
import functools
import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import psutil
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.web.resource import Resource
from twisted.web.server import Site

from health_manager.component import LOOPBACK, local_ip
from health_manager.config import redacted
from health_manager.web.apps_api import AppsApi
from health_manager.web.healthz import Healthz
from health_manager.web.page import StatusPage
from health_manager.web.prometheus import render_metrics
from health_manager.web.responses import send, send_json

if TYPE_CHECKING:
    from health_manager.component import Component
    from health_manager.config import Config
    from health_manager.metrics import Metrics
    from health_manager.web.state_view import StateView

# A route's renderer: the body (bytes) or NOT_DONE_YET (an int).
Render = Callable[..., bytes | int]

REALM = "health_manager"


class StatusPortError(Exception):
    """status.port cannot be listened on; the message names the key and the cause."""
ALLOWED_METHODS = (b"GET", b"HEAD")

# HM 2.0 published these varz keys with fixed values (PROTOCOL.md §6.2); kept so that
# readers of the old /varz find every key they knew.
HM2_FIXED_VARZ = {
    "varz_publishes": 0,
    "varz_holds": 0,
    "droplets": {},
    "last_up_known": None,
    "users": [],
    "apps": [],
}


# HM 2.0's log_counts (a Steno counter) named every Steno level, zero or not; the collector
# records fatal, error and warn. twisted.logger's level names, mapped onto Steno's.
STENO_LEVELS = ("off", "fatal", "error", "warn", "info", "debug", "debug1", "debug2", "all")
_STENO_NAMES = {LogLevel.critical: "fatal", LogLevel.error: "error", LogLevel.warn: "warn",
                LogLevel.info: "info", LogLevel.debug: "debug"}


class LogCounts:
    """A twisted.logger observer counting events per level, for `log_counts` in /varz."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(STENO_LEVELS, 0)

    def __call__(self, event: dict[str, Any]) -> None:
        name = _STENO_NAMES.get(event.get("log_level"))
        if name is not None:
            self._counts[name] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(self._counts)


def sample_vitals(process: psutil.Process) -> dict[str, Any]:
    """Process and host vitals as VCAP::Component reports them: `mem` (KB) as in HM 2.0's
    vcap-common, `mem_bytes` as from 2014 on (the collector reads only that one since)."""
    memory = psutil.virtual_memory()
    rss = process.memory_info().rss
    return {
        "mem": rss // 1024,
        "mem_bytes": rss,
        "cpu": process.cpu_percent(interval=None),
        "mem_used_bytes": memory.used,
        "mem_free_bytes": memory.available,
        "cpu_load_avg": os.getloadavg()[0],
    }


class Vitals:
    """Vitals sampled at most once per `min_interval` seconds of the injected clock."""

    def __init__(self, clock: IReactorTime,
                 sample: Callable[[], dict[str, Any]] | None = None,
                 min_interval: float = 1.0) -> None:
        self._clock = clock
        if sample is None:
            process = psutil.Process()
            process.cpu_percent(interval=None)  # primes the counter: the first call reads 0
            sample = functools.partial(sample_vitals, process)
        self._sample = sample
        self._min_interval = min_interval
        self._last: dict[str, Any] | None = None
        self._sampled_at = 0.0  # read only once _last is set

    def current(self) -> dict[str, Any]:
        now = self._clock.seconds()
        if self._last is None or now - self._sampled_at >= self._min_interval:
            self._last = self._sample()
            self._sampled_at = now
        return dict(self._last)


def basic_auth_valid(header: bytes | None, user: str, password: str) -> bool:
    """True when the Authorization `header` (bytes or None) carries exactly user:password.

    Both parts are always compared, in constant time, so timing reveals neither.
    """
    given_user, given_password = b"", b""
    if header:
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            given_user, _, given_password = decoded.partition(b":")
    user_ok = hmac.compare_digest(given_user, user.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password, password.encode("utf-8"))
    return header is not None and user_ok & password_ok


class StatusResource(Resource):
    """The whole site: auth first, then one route per path, GET and HEAD only.

    `routes` maps an exact path to `render(request)`; `prefixes` maps a path prefix to
    `render(request, rest)`. A render returns the body (bytes) or NOT_DONE_YET.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, user: str, password: str, routes: Mapping[bytes, Render],
                 prefixes: Iterable[tuple[bytes, Render]] = ()) -> None:
        super().__init__()
        self._user = user
        self._password = password
        self._routes = dict(routes)
        self._prefixes = tuple(prefixes)

    def render(self, request):
        if not basic_auth_valid(request.getHeader(b"authorization"), self._user,
                                self._password):
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", f'Basic realm="{REALM}"'.encode())
            return send(request, b"Unauthorized\n", b"text/plain")
        render = self._route(request.path)
        if render is None:
            request.setResponseCode(404)
            return send(request, b"Not Found\n", b"text/plain")
        if request.method not in ALLOWED_METHODS:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(ALLOWED_METHODS))
            return send(request, b"Method Not Allowed\n", b"text/plain")
        return render(request)

    def _route(self, path):
        render = self._routes.get(path)
        if render is not None:
            return render
        for prefix, render in self._prefixes:
            rest = path[len(prefix):]
            if path.startswith(prefix) and rest and b"/" not in rest:
                return functools.partial(render, rest=rest.decode("utf-8", "replace"))
        return None


class QuietSite(Site):
    """A Site whose access log goes to debug: the collector polls /varz all day (and on
    HM9000's ports DEAs post every heartbeat interval, CCs ask on every listing)."""

    access_log = Logger()

    def log(self, request):
        self.access_log.debug(
            "{method} {path} {code}", method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"), code=request.code)


class StatusServer(Service):
    """Serves the status port on the local_route IP (the Manager registers the component).

    Every resource reads the health manager through `view` (a StateView) and `metrics`;
    none changes them.
    """

    log = Logger()

    def __init__(self, config: "Config", metrics: "Metrics", component: "Component",
                 view: "StateView", reactor: Any, clock: IReactorTime,
                 log_counts: LogCounts | None = None, vitals: Vitals | None = None,
                 route_ip: Callable[..., str | None] = local_ip) -> None:
        """`view` is the read-only StateView; `reactor` provides listenTCP, the site's
        timeouts and the turns a long listing yields between its slices; `clock` paces
        the vitals sampling."""
        self._config = config
        self._metrics = metrics
        self._component = component
        self._view = view
        self._reactor = reactor
        self._log_counts = log_counts if log_counts is not None else LogCounts()
        self._vitals = vitals if vitals is not None else Vitals(clock)
        self._route_ip = route_ip
        self._num_cores = psutil.cpu_count() or os.cpu_count() or 1
        self._config_view = redacted(config.raw)
        apps = AppsApi(view, reactor)
        page = StatusPage(view, reactor)
        healthz = Healthz(view)
        resource = StatusResource(
            config.status.user, config.status.password,
            routes={
                b"/": page.render,
                b"/varz": self._render_varz,
                b"/healthz": healthz.render,
                b"/metrics": self._render_metrics,
                b"/v1/apps": apps.render_list,
            },
            prefixes=[(b"/v1/apps/", apps.render_one)])
        self.site = QuietSite(resource, reactor=reactor)
        self.site.noisy = False
        self.ip: str | None = None
        self.port: int | None = None
        self._listening: IListeningPort | None = None

    def privilegedStartService(self):
        # Under twistd the port is bound here, before the reactor runs, so a busy port
        # stops the start at once (tap.py turns it into one line and exit 1).
        super().privilegedStartService()
        self._listen()

    def startService(self):
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self):
        self.ip = self._choose_ip()
        port = self._config.status.port
        try:
            self._listening = self._reactor.listenTCP(port, self.site, interface=self.ip)
        except CannotListenError as e:
            cause = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise StatusPortError(f"config key 'status.port': cannot listen on "
                                  f"{self.ip}:{port}: {cause}") from None
        # IListeningPort.getHost() is an IAddress; a TCP port's is an IPv4Address.
        self.port = self._listening.getHost().port  # type: ignore[union-attr]
        self.log.info("status server listening on {host}", host=self.host)

    def stopService(self):
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)

    @property
    def host(self) -> str | None:
        """`ip:port` as announced, or None before the server listens."""
        return None if self.port is None else f"{self.ip}:{self.port}"

    def varz(self) -> dict[str, Any]:
        """Every /varz key: the metrics, then the component keys (PROTOCOL.md §6.2, §6.3)."""
        varz = dict(HM2_FIXED_VARZ)
        varz.update(self._metrics.varz())
        varz.update(self._component.identity())
        varz["host"] = self.host
        varz.update(self._vitals.current())
        varz.update(
            uptime=self._component.uptime(),
            num_cores=self._num_cores,
            config=self._config_view,
            log_counts=self._log_counts.as_dict(),
            state="RUNNING",
        )
        facts = self._view.facts()
        # Which server of a NATS cluster this HM is on; null while disconnected.
        varz.update(nats_connected=bool(facts.nats_connected), nats_server=facts.nats_server)
        return varz

    def _render_varz(self, request):
        return send_json(request, self.varz(), pretty=True)

    def _render_metrics(self, request):
        body, content_type = render_metrics(self._metrics, self._view.facts())
        return send(request, body, content_type)

    def _choose_ip(self):
        route = self._config.local_route
        if route is None:
            self.log.info("local_route not set, status server binds {ip}", ip=LOOPBACK)
            return LOOPBACK
        ip = self._route_ip(route)
        if ip is None:
            self.log.warn("no local IP routes to local_route {route}, status server binds "
                          "{ip}", route=route, ip=LOOPBACK)
            return LOOPBACK
        return ip
