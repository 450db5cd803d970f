"""Integration: /varz and /healthz over real HTTP on loopback (treq), and component
discover plus /healthz over a real nats-server (NatsBus on the asyncio reactor).

/healthz is held to the CF collector's rule (cloudfoundry/collector `fetch_healthz`): the
component is healthy when `body.strip.downcase == "ok"`, which must be so exactly when the
status is 200."""

import base64

import orjson
import treq
from treq.client import HTTPClient
from twisted.internet import task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from health_manager.bus import NatsBus
from health_manager.component import ANNOUNCE_SUBJECT, DISCOVER_SUBJECT, Component
from health_manager.config import build_config
from health_manager.metrics import Metrics
from health_manager.simulation.nats_server import NatsServer
from health_manager.testing.bus import InMemoryBus
from health_manager.web.status_server import StatusServer
from spec.status_support import make_view

MBUS_PASSWORD = "mbus-Pa55word-never-shown"
USER, PASSWORD = "thin", "thin-secret"
# Every /varz key the collector reads of a HealthManager (its HealthManager handler and the
# common ones of Handler#do_process).
COLLECTOR_KEYS = {
    "total", "running", "analysis_loop_duration", "bulk_update_loop_duration",
    "total_users", "queue_length", "heartbeat_msgs_received", "droplet_exited_msgs_received",
    "droplet_updated_msgs_received", "healthmanager_status_msgs_received",
    "healthmanager_health_request_msgs_received",
    "healthmanager_droplet_request_msgs_received", "health_start_messages_sent",
    "health_stop_messages_sent", "mem_bytes", "mem_used_bytes", "mem_free_bytes",
    "cpu_load_avg", "uptime", "log_counts",
}
TOTAL_KEYS = {"apps", "started_apps", "instances", "started_instances", "memory",
              "started_memory"}
RUNNING_KEYS = {"apps", "crashes", "running_instances", "missing_instances",
                "flapping_instances"}


def make_config(mbus):
    config, _warnings = build_config({
        "mbus": mbus,
        "local_route": "127.0.0.1",
        "bulk_api": {"host": "http://127.0.0.1:1"},
        "status": {"port": 0, "user": USER, "password": PASSWORD},
    }, {})
    return config


async def wait_until(reactor, predicate, timeout=10.0):
    """Poll `predicate` every 50 ms until true; fail after `timeout` seconds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


class _HttpTestCase(TestCase):
    timeout = 30

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)

    def start_server(self, config, bus, bus_connected):
        self.metrics = Metrics()
        self.component = Component(config, bus, self.reactor)
        view, self.desired = make_view(config, self.reactor, self.metrics, bus_connected)
        self.server = StatusServer(config, self.metrics, self.component, view,
                                   self.reactor, self.reactor)
        self.server.startService()
        self.addCleanup(self.server.stopService)
        return self.server

    async def get(self, path, auth=(USER, PASSWORD), method="GET", headers=None):
        url = f"http://127.0.0.1:{self.server.port}{path}"
        response = await self.http.request(method, url, auth=auth, headers=headers)
        body = await treq.content(response)
        return response, body

    async def collector_healthz(self):
        """(status, healthy) as the collector reads /healthz: GET with its Basic header
        and HTTParty's Accept, healthy when `body.strip.downcase == "ok"`."""
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode())
        response, body = await self.get("/healthz", auth=None, headers={
            "Authorization": [b"Basic " + credentials], "Accept": ["*/*"]})
        return response.code, body.strip(b" \t\n\v\f\r\x00").lower() == b"ok"


class StatusHttpTests(_HttpTestCase):
    def setUp(self):
        super().setUp()
        self.connected = True
        self.bus = InMemoryBus(task.Clock())
        self.start_server(make_config(f"nats://nats:{MBUS_PASSWORD}@127.0.0.1:4222"),
                          self.bus, lambda: self.connected)

    def test_listens_on_loopback_ephemeral_port(self):
        """status.port 0 listens on an ephemeral port of the local_route IP."""
        self.assertGreater(self.server.port, 0)
        self.assertEqual(self.server.host, f"127.0.0.1:{self.server.port}")

    async def test_unauthorized(self):
        """Requests without or with wrong basic auth are refused with 401 and a challenge."""
        for path in ("/varz", "/healthz"):
            for auth in (None, (USER, "wrong"), ("wrong", PASSWORD)):
                response, body = await self.get(path, auth)
                self.assertEqual(response.code, 401)
                self.assertEqual(response.headers.getRawHeaders("www-authenticate"),
                                 ['Basic realm="health_manager"'])
                self.assertNotIn(PASSWORD.encode(), body)

    async def test_varz(self):
        """/varz with valid auth is JSON holding every key the collector reads, current
        counters, and never the mbus password."""
        self.metrics.droplet_exited_msgs_received = 3
        response, body = await self.get("/varz")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        varz = orjson.loads(body)
        self.assertEqual(COLLECTOR_KEYS - set(varz), set())
        self.assertEqual(set(varz["total"]), TOTAL_KEYS)
        self.assertEqual(set(varz["running"]), RUNNING_KEYS)
        self.assertEqual(varz["droplet_exited_msgs_received"], 3)
        self.assertEqual(varz["type"], "HealthManager")
        self.assertEqual(varz["host"], self.server.host)
        self.assertGreater(varz["mem"], 0)
        self.assertEqual(varz["mem"], varz["mem_bytes"] // 1024)
        recorded = ("fatal", "error", "warn")  # the levels the collector records
        self.assertEqual({level: varz["log_counts"][level] for level in recorded},
                         dict.fromkeys(recorded, 0))
        self.assertNotIn(MBUS_PASSWORD.encode(), body)
        self.assertNotIn("mbus", varz["config"])

    async def test_healthz(self):
        """/healthz says `ok` (200, text/plain) while the bus is connected and
        `unavailable: ` with the reason (503) else; ?format=json gives the JSON view."""
        response, body = await self.get("/healthz")
        self.assertEqual((response.code, body), (200, b"ok"))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain"])
        response, body = await self.get("/healthz?format=json")
        self.assertEqual((response.code, orjson.loads(body)["status"]), (200, "ok"))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.connected = False
        response, body = await self.get("/healthz")
        self.assertEqual((response.code, body), (503, b"unavailable: NATS is not connected\n"))
        response, body = await self.get("/healthz", headers={"Accept": ["application/json"]})
        self.assertEqual((response.code, orjson.loads(body)["nats"]), (503, "disconnected"))

    async def test_collector_rule(self):
        """As the collector reads it: healthy if and only if 200, when healthy, with NATS
        down, with the desired state lost, and when both are wrong."""
        self.assertEqual(await self.collector_healthz(), (200, True))
        self.connected = False
        self.assertEqual(await self.collector_healthz(), (503, False))
        self.connected = True
        self.desired.fresh = False
        self.desired.last_success = self.reactor.seconds() - 181  # desired_state_lost: 180
        self.assertEqual(await self.collector_healthz(), (503, False))
        self.connected = False
        self.assertEqual(await self.collector_healthz(), (503, False))
        self.connected, self.desired.fresh = True, True
        self.assertEqual(await self.collector_healthz(), (200, True))

    async def test_not_found_and_not_allowed(self):
        """Other paths answer 404 and other methods 405."""
        response, _body = await self.get("/nope")
        self.assertEqual(response.code, 404)
        response, _body = await self.get("/varz", method="POST")
        self.assertEqual(response.code, 405)


class StatusOverNatsTests(_HttpTestCase):
    timeout = 60

    def setUp(self):
        super().setUp()
        self.nats = NatsServer(user="nats", password=MBUS_PASSWORD).start()
        self.addCleanup(self.nats.stop)
        self.bus = NatsBus(self.reactor, self.nats.url)
        self.collector = NatsBus(self.reactor, self.nats.url, name="collector")
        # Cleanups run last-in first-out: buses stop before the server.
        self.addCleanup(self.collector.stop)
        self.addCleanup(self.bus.stop)
        self.bus.start()
        self.collector.start()
        self.start_server(make_config(self.nats.url), self.bus, lambda: self.bus.connected)

    async def test_announce_and_discover(self):
        """Over a real NATS server the component announces once and answers discover with
        its identity plus uptime."""
        announced = []
        await self.collector.subscribe(ANNOUNCE_SUBJECT, announced.append)
        await self.component.subscribe()
        await wait_until(self.reactor,
                         lambda: self.bus.connected and self.collector.connected)
        await self.collector.flush()
        self.component.announce(self.server.host)
        await wait_until(self.reactor, lambda: announced)
        [reply] = await self.collector.request(DISCOVER_SUBJECT, b"", timeout=5)
        identity = orjson.loads(reply.data)
        self.assertEqual(identity["host"], self.server.host)
        self.assertEqual(identity["uuid"], self.component.uuid)
        self.assertEqual(identity["credentials"], [USER, PASSWORD])
        self.assertRegex(identity["uptime"], r"^\d+d:\d+h:\d+m:\d+s$")
        self.assertEqual(orjson.loads(announced[0].data), self.component.identity())

    async def test_healthz_follows_nats(self):
        """/healthz answers ok while NATS is up and not connected once it is gone."""
        await wait_until(self.reactor, lambda: self.bus.connected)
        self.assertEqual(await self.collector_healthz(), (200, True))
        response, body = await self.get("/healthz?format=json")
        self.assertEqual((response.code, orjson.loads(body)["nats"]), (200, "connected"))
        self.nats.kill()
        await wait_until(self.reactor, lambda: not self.bus.connected)
        self.assertEqual(await self.collector_healthz(), (503, False))
        response, body = await self.get("/healthz?format=json")
        self.assertEqual((response.code, orjson.loads(body)["reasons"]),
                         (503, ["NATS is not connected"]))
        response, body = await self.get("/varz")
        self.assertIs(orjson.loads(body)["nats_connected"], False)
        self.assertNotIn(MBUS_PASSWORD.encode(), body)
