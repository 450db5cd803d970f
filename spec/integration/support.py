"""Shared plumbing for the integration tests: a live foundation (a real nats-server, the fake
Cloud Controller serving the bulk API over loopback HTTP, simulated DEAs on their own NATS
connection, and a recorder of every `health.start` / `health.stop` on the wire), the health
manager run either in this process on the asyncio reactor or as a `twistd -n` child, and the
small waiting, logging and config-file helpers the tests share.

Intervals are shortened (FAST_INTERVALS) so that every rule shows within seconds; a test
that needs other values passes overrides.
"""

import os
import signal
import subprocess
import sys
import sysconfig
import time
from types import MappingProxyType

import orjson
import psutil
import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool

from health_manager.bus import NatsBus
from health_manager.config import build_config
from health_manager.manager import Manager
from health_manager.simulation.cloud_controller import BulkApiResource, FakeCloudController
from health_manager.simulation.dea import SimulatedDea
from health_manager.simulation.nats_server import NatsServer, free_port

STATUS_USER, STATUS_PASSWORD = "hm", "hm-status-secret"
MBUS_USER, MBUS_PASSWORD = "nats", "mbus-Pa55-never-shown"
BULK_PASSWORD = "bulk-Pa55-never-shown"

FAST_INTERVALS = MappingProxyType({
    "desired_state_update": 2,
    "desired_state_lost": 20,
    "droplet_lost": 2,
    "droplets_analysis": 0.5,
    "request_queue": 0.5,
    "queue_batch_size": 40,
    "flapping_death": 1,
    "flapping_timeout": 60,
    "min_restart_delay": 1,
    "max_restart_delay": 2,
    "delay_time_noise": 0,
    "giveup_crash_number": 4,
    "droplet_gc_grace_period": 30,
    "droplet_gc": 10,
    "bulk_credentials_timeout": 1,
    "bulk_request_timeout": 1,
})

TWISTD = os.path.join(sysconfig.get_path("scripts"), "twistd")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def sleep(seconds):
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate, timeout=15.0, step=0.05, what="condition"):
    """Poll `predicate` until true; the seconds waited. Fails after `timeout` seconds."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not met within {timeout} s")
        await sleep(step)
    return time.monotonic() - started


async def connected(bus, timeout=10.0):
    """Start `bus` and wait for its NATS connection."""
    bus.start()
    await wait_until(lambda: bus.connected, timeout, what="NATS connection")


def rss_mib(pid):
    return psutil.Process(pid).memory_info().rss / 2 ** 20


def write_config(test, **overrides):
    """A YAML config file for `twistd health_manager`: a minimal valid config (NATS and the
    bulk API unreachable) updated with `overrides`; its absolute path."""
    config = {
        "mbus": "nats://127.0.0.1:1",
        "bulk_api": {"host": "http://127.0.0.1:1"},
        "status": {"port": free_port(), "user": "u", "password": "p"},
        "local_route": "127.0.0.1",
        "logging": {"level": "info"},
    }
    config.update(overrides)
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def _default_sigint():
    # A shell that runs the suite in the background starts it with SIGINT ignored, and the
    # child would inherit that: give it the default, as a terminal-started service has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TwistdProcess:
    """A twistd child whose output is collected in a file (no pipe to fill up)."""

    def __init__(self, test, config_path):
        self.log_path = os.path.abspath(test.mktemp())
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.process = subprocess.Popen(
            [sys.executable, TWISTD, "-n", "--pidfile=", "health_manager", "-c", config_path],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True, preexec_fn=_default_sigint)
        test.addCleanup(self.kill)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, text, timeout=15):
        """Block until `text` is in the output; fail if the child exits or time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen; output:\n{self.output()}")

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


class LogCapture:
    """Every log event of this process, formatted, from now until `stop()`."""

    def __init__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)

    def stop(self):
        globalLogPublisher.removeObserver(self.events.append)

    def text(self):
        lines = []
        for event in self.events:
            lines.append(formatEvent(event) or "")
            failure = event.get("log_failure")
            if failure is not None:
                lines.append(failure.getTraceback())
        return "\n".join(lines)

    def count(self, fragment):
        return sum(1 for event in self.events if fragment in (formatEvent(event) or ""))


class Recorder:
    """Everything published on some subjects, as an outside observer over NATS sees it."""

    def __init__(self):
        self.messages = []  # (monotonic arrival time, subject, decoded payload or raw bytes)

    def __call__(self, message):
        try:
            payload = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            payload = message.data
        self.messages.append((time.monotonic(), message.subject, payload))

    def payloads(self, subject, since=0.0):
        """The payloads on `subject` that arrived at or after monotonic time `since`."""
        return [payload for at, s, payload in self.messages if s == subject and at >= since]


class LiveFoundation:
    """NATS, the fake CC and DEAs, owned by one test: `await foundation.start()`, then the
    health manager with `start_manager()` or `start_child()`; the test's cleanup stops
    everything."""

    def __init__(self, test, deas=2, nats_port=None, start_nats=True, nats=None):
        """`nats`: a running server the test owns (a cluster member), instead of our own."""
        self.test = test
        if nats is None:
            nats = NatsServer(port=nats_port, user=MBUS_USER, password=MBUS_PASSWORD)
            test.addCleanup(nats.stop)
            if start_nats:
                nats.start()
        self.nats = nats
        self.bus = NatsBus(reactor, self.nats.url, name="foundation")
        self.cc = FakeCloudController(self.bus, reactor, password=BULK_PASSWORD)
        self.deas = [SimulatedDea(self.bus, reactor, f"{n}-dea{n:02d}",
                                  heartbeat_interval=0.5, startup_delay=0.2)
                     for n in range(deas)]
        self.recorder = Recorder()
        self.manager = None
        self.http_pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=self.http_pool))

    async def start(self):
        """Listen for bulk-API requests; connect (waiting only if NATS is up), then
        subscribe the CC, DEAs and recorder."""
        # Our own site, not cc.listen(): cc_down() must cut its open connections.
        site = server.Site(BulkApiResource(self.cc))
        site.displayTracebacks = False
        self._cc_http = WrappingFactory(site)
        self.cc_port = reactor.listenTCP(0, self._cc_http, interface="127.0.0.1")
        self.cc_url = f"http://127.0.0.1:{self.cc_port.getHost().port}"
        self.test.addCleanup(self._stop)
        self.bus.start()
        if self.nats.running:
            await wait_until(lambda: self.bus.connected, what="foundation bus connected")
        # The DEAs' heartbeat timers start only now, just before the health manager: the
        # end-to-end flapping test's FLAPPING status query relies on that phase.
        subscriptions = [self.cc.start(),
                         self.bus.subscribe("health.start", self.recorder),
                         self.bus.subscribe("health.stop", self.recorder)]
        for dea in self.deas:
            subscriptions.append(dea.start())
            self.cc.add_dea(dea.uuid)
        await defer.gatherResults(subscriptions, consumeErrors=True)
        if self.nats.running:
            await self.bus.flush()  # the server has every subscription before we go on
        return self

    async def _stop(self):
        if self.manager is not None and self.manager.running:
            await self.manager.stopService()
        for dea in self.deas:
            dea.stop()
        self.cc.stop()
        await defer.maybeDeferred(self.cc_port.stopListening)
        await self.bus.stop()
        await self.http_pool.closeCachedConnections()

    def config_mapping(self, intervals=None, mbus=None):
        """The health manager's raw config for this foundation: FAST_INTERVALS updated with
        `intervals`; `mbus` when the HM should connect elsewhere than the foundation."""
        return {
            "mbus": mbus or self.nats.url,
            "bulk_api": {"host": self.cc_url, "batch_size": 2},
            "status": {"port": 0, "user": STATUS_USER, "password": STATUS_PASSWORD},
            "local_route": "127.0.0.1",
            "logging": {"level": "info"},
            "intervals": dict(FAST_INTERVALS, **(intervals or {})),
        }

    async def start_manager(self, intervals=None, mbus=None):
        """The health manager in this process, on the asyncio reactor; fires with it once
        it is connected to NATS and started."""
        config, warnings = build_config(self.config_mapping(intervals, mbus), environ={})
        assert not warnings, warnings
        self.manager = manager = Manager(config, reactor)
        manager.startService()
        await wait_until(lambda: manager.bus.connected, what="HM connected")
        await manager._started
        return manager

    def start_child(self, intervals=None):
        """The health manager as `twistd -n health_manager` with a config file; the
        TwistdProcess, with the `status_port` it serves on."""
        config = self.config_mapping(intervals)
        config["status"]["port"] = free_port()
        child = TwistdProcess(self.test, write_config(self.test, **config))
        child.status_port = config["status"]["port"]
        return child

    async def cc_down(self):
        """The Cloud Controller goes away: open connections are cut, new ones refused."""
        await self.cc_port.stopListening()
        for protocol in list(self._cc_http.protocols):
            protocol.transport.abortConnection()

    def cc_up(self):
        port = int(self.cc_url.rsplit(":", 1)[1])
        self.cc_port = reactor.listenTCP(port, self._cc_http, interface="127.0.0.1")

    def place(self, guid, instances, running=None):
        """A STARTED app of `instances` instances, with `running` of them placed on DEAs
        (all by default)."""
        app = self.cc.create_app(guid, instances=instances, place=False)
        self.cc.start_instances(app, range(instances if running is None else running))
        return app

    def instances_of(self, guid):
        """(dea, instance) for every instance of `guid` the DEAs hold, in any state."""
        return [(dea, instance) for dea in self.deas for instance in dea.instances.values()
                if instance.droplet == guid]

    def instance(self, guid, index):
        """(dea, instance) of the live (STARTING or RUNNING) instance at `index`, or
        (None, None)."""
        return next(((dea, instance) for dea, instance in self.instances_of(guid)
                     if instance.index == index and instance.live), (None, None))

    def kill_instance(self, guid, index):
        """The instance vanishes without a word (only missing heartbeats tell)."""
        for dea, instance in self.instances_of(guid):
            if instance.index == index:
                dea.kill(instance.guid)
                return instance.guid
        raise AssertionError(f"no instance {guid}[{index}] to kill")

    def running_indices(self, guid):
        return sorted(i.index for _, i in self.instances_of(guid) if i.state == "RUNNING")

    def starts(self, since=0.0):
        return self.recorder.payloads("health.start", since)

    def stops(self, since=0.0):
        return self.recorder.payloads("health.stop", since)

    async def request(self, subject, payload, max_replies=1, timeout=1.0):
        """A CC-style request to the health manager; the decoded replies (maybe none)."""
        try:
            replies = await self.bus.request(subject, orjson.dumps(payload),
                                             timeout=timeout, max_replies=max_replies)
        except Exception:
            return []
        return [orjson.loads(r.data) for r in replies]

    async def status_get(self, port, path, auth=(STATUS_USER, STATUS_PASSWORD), headers=None):
        """GET a status-server path; (HTTP code, body)."""
        response = await self.http.get(f"http://127.0.0.1:{port}{path}", auth=auth,
                                       headers=headers)
        return response.code, await treq.content(response)
