"""A live foundation for integration tests: a real nats-server, the simulated Cloud
Controller (bulk API over loopback HTTP) and DEAs over real NATS, and the health manager
(Manager) in this process on the asyncio reactor, with intervals short enough for tests.
"""

import os
import subprocess
import sys
import sysconfig
import time

import orjson
import yaml
from twisted.internet import defer, reactor, task

from health_manager.bus import NatsBus
from health_manager.config import build_config
from health_manager.manager import Manager
from health_manager.simulation.cloud_controller import FakeCloudController
from health_manager.simulation.dea import SimulatedDea
from health_manager.simulation.nats_server import NatsServer, free_port

FAST_INTERVALS = {
    "desired_state_update": 2,
    "desired_state_lost": 30,
    "droplet_lost": 1.5,
    "droplets_analysis": 0.5,
    "request_queue": 1,
    "queue_batch_size": 40,
    "flapping_death": 1,
    "flapping_timeout": 60,
    "min_restart_delay": 2,
    "max_restart_delay": 8,
    "delay_time_noise": 0,
    "giveup_crash_number": 4,
    "droplet_gc_grace_period": 60,
    "droplet_gc": 30,
    "bulk_credentials_timeout": 2,
    "bulk_request_timeout": 3,
}


async def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll `predicate` on the reactor until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, interval, lambda: None)


async def sleep(seconds):
    await task.deferLater(reactor, seconds, lambda: None)


async def connected(bus, timeout=10.0):
    bus.start()
    await wait_until(lambda: bus.connected, timeout, what="NATS connection")


class Recorder:
    """Everything published on some subjects, as seen by an outside observer over NATS."""

    def __init__(self):
        self.messages = []  # (monotonic time, subject, decoded payload)

    def __call__(self, message):
        try:
            payload = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            payload = message.data
        self.messages.append((time.monotonic(), message.subject, payload))

    def payloads(self, subject):
        return [p for _, s, p in self.messages if s == subject]


class LiveFoundation:
    """Start with `await foundation.start()`; everything is stopped in the test's cleanup."""

    def __init__(self, test, intervals=None, deas=1, heartbeat_interval=0.5,
                 startup_delay=0.2, config_overrides=None):
        self.test = test
        self.intervals = dict(FAST_INTERVALS, **(intervals or {}))
        self.dea_count = deas
        self.heartbeat_interval = heartbeat_interval
        self.startup_delay = startup_delay
        self.config_overrides = config_overrides or {}
        self.nats = None
        self.bus = None  # the outside world's connection: CC, DEAs, recorder
        self.cc = None
        self.deas = []
        self.manager = None
        self.recorder = Recorder()

    async def start(self, manager=True):
        self.nats = NatsServer(user="nats", password="mbus-s3cret").start()
        self.test.addCleanup(self.nats.stop)
        self.bus = NatsBus(reactor, self.nats.url, name="foundation")
        self.test.addCleanup(self.bus.stop)
        await connected(self.bus)
        self.cc = FakeCloudController(self.bus, reactor)
        await self.cc.start()
        self.cc.listen()
        self.test.addCleanup(self.cc.stop)
        for n in range(self.dea_count):
            dea = SimulatedDea(self.bus, reactor, f"dea-{n}",
                               heartbeat_interval=self.heartbeat_interval,
                               startup_delay=self.startup_delay, advertise_interval=0.5)
            await dea.start()
            self.test.addCleanup(dea.stop)
            self.deas.append(dea)
        for subject in ("health.start", "health.stop"):
            await self.bus.subscribe(subject, self.recorder)
        await self.bus.flush()
        await wait_until(lambda: len(self.cc.dea_load) == self.dea_count,
                         what="DEAs advertised")
        if manager:
            await self.start_manager()
        return self

    def config_mapping(self):
        mapping = {
            "mbus": self.nats.url,
            "bulk_api": {"host": self.cc.url, "batch_size": 50},
            "status": {"port": 0, "user": "hm-user", "password": "hm-pass"},
            "local_route": "127.0.0.1",
            "logging": {"level": "info"},
            "intervals": self.intervals,
        }
        mapping.update(self.config_overrides)
        return mapping

    async def start_manager(self):
        config, warnings = build_config(self.config_mapping(), environ={})
        assert not warnings, warnings
        self.manager = Manager(config, reactor)
        self.manager.startService()
        self.test.addCleanup(self.stop_manager)
        await wait_until(lambda: self.manager.bus.connected, what="HM connected")
        await self.manager._started
        return self.manager

    async def stop_manager(self):
        if self.manager is not None and self.manager.running:
            await self.manager.stopService()

    def running(self, droplet):
        """Instances the DEAs run for `droplet` in state RUNNING."""
        return [i for dea in self.deas for i in dea.instances.values()
                if i.droplet == droplet and i.state == "RUNNING"]

    def instance(self, droplet, index):
        for dea in self.deas:
            for i in dea.instances.values():
                if i.droplet == droplet and i.index == index and i.live:
                    return dea, i
        return None, None

    async def request(self, subject, payload, max_replies=1, timeout=1.0):
        """A CC-style request to the health manager; the decoded replies (maybe none)."""
        try:
            replies = await self.bus.request(subject, orjson.dumps(payload),
                                             timeout=timeout, max_replies=max_replies)
        except Exception:
            return []
        return [orjson.loads(r.data) for r in replies]


TWISTD = os.path.join(sysconfig.get_path("scripts"), "twistd")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(test, **overrides):
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


class TwistdProcess:
    """A twistd child whose output is collected in a file (no pipe to fill up)."""

    def __init__(self, test, config_path, extra_env=None):
        self.log_path = os.path.abspath(test.mktemp())
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=ROOT, **(extra_env or {}))
        self.process = subprocess.Popen(
            [sys.executable, TWISTD, "-n", "--pidfile=", "health_manager", "-c", config_path],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True)
        test.addCleanup(self.kill)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, text, timeout=15):
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
