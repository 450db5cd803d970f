"""Unit tests: component identity/announce/discover, and /varz /healthz over an in-memory HTTP
connection (no network, no real reactor)."""

import base64

import orjson
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from health_manager.component import (
    ANNOUNCE_SUBJECT,
    DISCOVER_SUBJECT,
    Component,
    format_start,
    format_uptime,
    local_ip,
)
from health_manager.config import build_config
from health_manager.metrics import Metrics
from health_manager.testing.bus import InMemoryBus
from health_manager.web import status_server
from health_manager.web.status_server import LogCounts, StatusServer, Vitals, basic_auth_valid
from spec.status_support import make_view

MBUS_PASSWORD = "s3cretMbusPw"
UUID_HEX = "0123456789abcdef0123456789abcdef"
START = 1_378_337_194  # 2013-09-04 23:26:34 UTC
VITALS = {"mem": 2048, "mem_bytes": 2048 * 1024, "cpu": 1.5, "mem_used_bytes": 10,
          "mem_free_bytes": 20, "cpu_load_avg": 0.25}

# Every key of PROTOCOL.md §6.2 and §6.3 a reader of HM 2.0's /varz may look for.
VARZ_KEYS = {
    "total_users", "queue_length", "heartbeat_msgs_received", "droplet_exited_msgs_received",
    "droplet_updated_msgs_received", "healthmanager_status_msgs_received",
    "healthmanager_health_request_msgs_received", "healthmanager_droplet_request_msgs_received",
    "health_start_messages_sent", "health_stop_messages_sent", "analysis_loop_duration",
    "bulk_update_loop_duration", "varz_publishes", "varz_holds", "droplets", "state",
    "last_up_known", "users", "apps", "total", "total_apps", "total_instances",
    "crashed_instances", "running_instances", "missing_instances", "flapping_instances",
    "running", "type", "index", "uuid", "host", "credentials", "start", "uptime", "num_cores",
    "config", "log_counts", "mem", "mem_bytes", "cpu", "mem_used_bytes", "mem_free_bytes",
    "cpu_load_avg", "nats_connected",
}


def make_config(status=None, **extra):
    raw = {
        "mbus": f"nats://nats:{MBUS_PASSWORD}@127.0.0.1:4222",
        "bulk_api": {"host": "http://cc.example"},
        "status": {"port": 54321, "user": "thin", "password": "thinpw"}
        if status is None else status,
        "index": 3,
    }
    raw.update(extra)
    tokens = iter(("a1" * 16, "b2" * 16))
    config, _warnings = build_config(raw, {}, token_hex=lambda n: next(tokens))
    return config


def auth(user="thin", password="thinpw"):
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def http(site, method=b"GET", path=b"/varz", authorization=None, headers=()):
    """Send one request through `site` over a StringTransport; (code, headers, body).
    `headers` are extra (name, value) request headers."""
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    head = method + b" " + path + b" HTTP/1.1\r\nHost: hm\r\nConnection: close\r\n"
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    protocol.dataReceived(head + b"\r\n")
    raw_head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = raw_head.split(b"\r\n")
    code = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return code, headers, body


class ComponentTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START + 90_061)  # one day, one hour, one minute, one second later
        self.bus = InMemoryBus(self.clock)
        self.config = make_config()
        self.component = Component(self.config, self.bus, self.clock, lambda: UUID_HEX, START)

    def register(self, component=None, host="10.0.0.5:54321"):
        component = component or self.component
        self.successResultOf(component.subscribe())
        component.announce(host)

    def test_identity(self):
        """The identity holds type HealthManager, index, uuid "<index>-<32 hex>", host,
        the status credentials and the start time."""
        self.register()
        self.assertEqual(self.component.identity(), {
            "type": "HealthManager", "index": 3, "uuid": f"3-{UUID_HEX}",
            "host": "10.0.0.5:54321", "credentials": ["thin", "thinpw"],
            "start": "2013-09-04 23:26:34 +0000"})

    def test_default_uuid_is_32_hex(self):
        """Without a uuid factory the uuid is the index, a dash and 32 random hex chars."""
        component = Component(self.config, self.bus, self.clock)
        prefix, _, suffix = component.uuid.partition("-")
        self.assertEqual(prefix, "3")
        self.assertEqual(len(suffix), 32)
        int(suffix, 16)

    def test_start_defaults_to_clock(self):
        """Without a start time the component started at the clock's now."""
        component = Component(self.config, self.bus, self.clock, lambda: UUID_HEX)
        self.assertEqual(component.uptime(), "0d:0h:0m:0s")

    def test_format_uptime(self):
        """Uptime reads <d>d:<h>h:<m>m:<s>s."""
        self.assertEqual(format_uptime(0), "0d:0h:0m:0s")
        self.assertEqual(format_uptime(2 * 86400 + 3 * 3600 + 4 * 60 + 5.9), "2d:3h:4m:5s")

    def test_format_start(self):
        """Start reads YYYY-MM-DD HH:MM:SS +0000 in UTC."""
        self.assertEqual(format_start(0), "1970-01-01 00:00:00 +0000")

    def test_announce_once(self):
        """Announcing publishes the identity once on vcap.component.announce, no uptime."""
        self.register()
        announced = self.bus.published_json(ANNOUNCE_SUBJECT)
        self.assertEqual(announced, [self.component.identity()])
        self.assertNotIn("uptime", announced[0])

    def test_discover_replies_to_reply_subject(self):
        """A discover request with any body is answered on its reply subject only, with
        the identity plus uptime."""
        self.register()
        self.bus.clear()
        self.bus.publish(DISCOVER_SUBJECT, b"not json at all", reply="_INBOX.collector")
        self.assertEqual([m.subject for m in self.bus.published],
                         [DISCOVER_SUBJECT, "_INBOX.collector"])
        reply = orjson.loads(self.bus.published[1].data)
        self.assertEqual(reply, dict(self.component.identity(), uptime="1d:1h:1m:1s"))

    def test_discover_over_request(self):
        """A bus request on vcap.component.discover gets the identity back."""
        self.register()
        replies = self.successResultOf(self.bus.request(DISCOVER_SUBJECT, b""))
        self.assertEqual(orjson.loads(replies[0].data)["uuid"], f"3-{UUID_HEX}")

    def test_discover_without_reply_ignored(self):
        """A discover message without a reply subject is not answered."""
        self.register()
        self.bus.clear()
        self.bus.publish(DISCOVER_SUBJECT, b"{}")
        self.assertEqual(len(self.bus.published), 1)

    def test_unsubscribe_stops_discover(self):
        """After unsubscribe, discover is no longer answered."""
        self.register()
        self.successResultOf(self.component.unsubscribe())
        self.assertEqual(self.bus.subscribed_subjects(), [])

    def test_generated_credentials_logged_without_password(self):
        """Generated status credentials are logged once: the user, and that the password
        is available via vcap.component.discover; never the password itself."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        config = make_config(status={})
        component = Component(config, self.bus, self.clock, lambda: UUID_HEX, START)
        self.register(component, "127.0.0.1:1")
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn(config.status.user, text)
        self.assertIn("password available via vcap.component.discover", text)
        for event in events:
            self.assertNotIn(config.status.password, repr(
                {k: v for k, v in event.items() if k != "log_logger"}))

    def test_local_ip_loopback(self):
        """local_route on loopback yields the loopback source address."""
        self.assertEqual(local_ip("127.0.0.1"), "127.0.0.1")

    def test_local_ip_none(self):
        """Without local_route no IP is chosen (the server falls back to loopback)."""
        self.assertIsNone(local_ip(None))

    def test_local_ip_unreachable(self):
        """When the UDP connect fails, no IP is chosen."""
        class Unreachable:
            def __init__(self, *args):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def connect(self, address):
                raise OSError(101, "Network is unreachable")

        self.assertIsNone(local_ip("10.9.9.9", socket_factory=Unreachable))


class BasicAuthTests(SynchronousTestCase):
    def test_valid(self):
        """The exact user:password pair is accepted."""
        self.assertTrue(basic_auth_valid(auth(), "thin", "thinpw"))

    def test_invalid(self):
        """Missing, wrong, malformed or non-Basic credentials are refused."""
        for header in (None, b"", auth("thin", "nope"), auth("other", "thinpw"),
                       b"Basic !!!notbase64", b"Bearer " + auth()[6:], b"Basic " +
                       base64.b64encode(b"thinthinpw"), auth("thin", "thinpw2")):
            self.assertFalse(basic_auth_valid(header, "thin", "thinpw"), header)

    def test_both_always_compared(self):
        """User and password are both compared in constant time, even when the user is
        already wrong or no header came."""
        calls = []
        real = status_server.hmac.compare_digest

        def recording(a, b):
            calls.append((a, b))
            return real(a, b)

        self.patch(status_server.hmac, "compare_digest", recording)
        basic_auth_valid(auth("wrong", "x"), "thin", "thinpw")
        basic_auth_valid(None, "thin", "thinpw")
        self.assertEqual(len(calls), 4)


class LogCountsTests(SynchronousTestCase):
    def test_counts_per_level(self):
        """log_counts counts events per Steno level name, every level present as in HM
        2.0 (critical is Steno's fatal, which the collector records); events without a
        level are ignored."""
        counts = LogCounts()
        for level in (LogLevel.info, LogLevel.info, LogLevel.error, LogLevel.critical):
            counts({"log_level": level})
        counts({"message": "legacy"})
        self.assertEqual(counts.as_dict(), {
            "off": 0, "fatal": 1, "error": 1, "warn": 0, "info": 2, "debug": 0,
            "debug1": 0, "debug2": 0, "all": 0})


class VitalsTests(SynchronousTestCase):
    def test_sampled_at_most_once_a_second(self):
        """Vitals are sampled at most once per second of the clock."""
        clock = Clock()
        samples = []

        def sample():
            samples.append(clock.seconds())
            return {"mem": len(samples)}

        vitals = Vitals(clock, sample)
        self.assertEqual(vitals.current(), {"mem": 1})
        clock.advance(0.5)
        self.assertEqual(vitals.current(), {"mem": 1})
        clock.advance(0.5)
        self.assertEqual(vitals.current(), {"mem": 2})

    def test_real_sample(self):
        """The default sampler reports RSS in KB and in bytes, cpu, memory and load from
        psutil."""
        current = Vitals(Clock()).current()
        self.assertEqual(set(current), set(VITALS))
        self.assertGreater(current["mem"], 0)
        self.assertEqual(current["mem"], current["mem_bytes"] // 1024)


class StatusServerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START + 5)
        self.reactor = MemoryReactorClock()
        self.bus = InMemoryBus(self.clock)
        self.connected = True
        self.queue = 0
        self.metrics = Metrics(queue_length=lambda: self.queue)
        self.log_counts = LogCounts()
        self.server = self.make_server(make_config(
            local_route="127.0.0.1",
            extra={"nested": {"password": "deep-secret", "keep": 1}}))

    def make_server(self, config, route_ip=lambda route: "10.0.0.5"):
        self.config = config
        self.component = Component(config, self.bus, self.clock, lambda: UUID_HEX, START)
        view, self.desired = make_view(config, self.clock, self.metrics,
                                       lambda: self.connected)
        return StatusServer(config, self.metrics, self.component, view,
                            self.reactor, self.clock, log_counts=self.log_counts,
                            vitals=Vitals(self.clock, lambda: dict(VITALS)),
                            route_ip=route_ip)

    def get(self, path=b"/varz", method=b"GET", authorization=None, headers=()):
        return http(self.server.site, method, path,
                    auth() if authorization is None else authorization, headers)

    def varz(self):
        code, headers, body = self.get()
        self.assertEqual(code, 200)
        return orjson.loads(body)

    def test_listens_on_local_route_ip(self):
        """The server binds status.port on the local_route IP and offers ip:port as host."""
        self.assertIsNone(self.server.host)
        self.server.startService()
        [(port, site, _backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (54321, "10.0.0.5"))
        self.assertIs(site, self.server.site)
        self.assertEqual(self.server.port, 54321)
        self.assertEqual(self.server.host, "10.0.0.5:54321")

    def test_falls_back_to_loopback(self):
        """Without local_route, or when it yields no IP, the server binds 127.0.0.1."""
        for config, route_ip in ((make_config(), local_ip),
                                 (make_config(local_route="10.9.9.9"), lambda route: None)):
            server = self.make_server(config, route_ip)
            server.startService()
            self.assertEqual(self.reactor.tcpServers[-1][3], "127.0.0.1")
            self.assertEqual(server.ip, "127.0.0.1")

    def test_stop(self):
        """Stopping closes the listening port, once."""
        stopped = []

        class Port:
            def getHost(self):
                return IPv4Address("TCP", "10.0.0.5", 54321)

            def stopListening(self):
                stopped.append(True)

        self.patch(self.reactor, "listenTCP", lambda *args, **kwargs: Port())
        self.server.startService()
        self.successResultOf(self.server.stopService())
        self.successResultOf(self.server.stopService())
        self.assertEqual(stopped, [True])
        self.assertFalse(self.server.running)

    def test_unauthorized(self):
        """Without valid basic auth both paths answer 401 with a Basic challenge and no
        data."""
        for path in (b"/varz", b"/healthz", b"/other"):
            for header in (b"", auth("thin", "wrong"), auth("wrong", "thinpw")):
                code, headers, body = self.get(path, authorization=header)
                self.assertEqual(code, 401)
                self.assertEqual(headers[b"www-authenticate"],
                                 b'Basic realm="health_manager"')
                self.assertNotIn(b"thinpw", body)
                self.assertNotIn(b"total", body)

    def test_varz_is_pretty_json(self):
        """/varz answers pretty-printed JSON with content type application/json."""
        code, headers, body = self.get()
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertIn(b'\n  "', body)

    def test_varz_keys(self):
        """/varz holds every HM 2.0 key (metrics and component) from start-up, with
        zero totals and state RUNNING."""
        self.server.startService()
        varz = self.varz()
        self.assertEqual(VARZ_KEYS - set(varz), set())
        self.assertEqual(varz["state"], "RUNNING")
        self.assertEqual(varz["total"]["apps"], 0)
        self.assertEqual(varz["running"]["crashes"], 0)
        self.assertEqual(varz["uuid"], f"3-{UUID_HEX}")
        self.assertEqual(varz["host"], "10.0.0.5:54321")
        self.assertEqual(varz["credentials"], ["thin", "thinpw"])
        self.assertEqual(varz["uptime"], "0d:0h:0m:5s")
        self.assertEqual(varz["mem"], VITALS["mem"])

    def test_varz_values_are_current(self):
        """/varz shows counters, queue length, log counts and NATS state as of the
        request."""
        self.metrics.heartbeat_msgs_received += 7
        self.queue = 4
        self.log_counts({"log_level": LogLevel.warn})
        self.connected = False
        varz = self.varz()
        self.assertEqual(varz["heartbeat_msgs_received"], 7)
        self.assertEqual(varz["queue_length"], 4)
        self.assertEqual({k: v for k, v in varz["log_counts"].items() if v}, {"warn": 1})
        self.assertIs(varz["nats_connected"], False)

    def test_varz_hides_secrets(self):
        """/varz shows the config without mbus and without passwords at any depth."""
        code, _headers, body = self.get()
        self.assertNotIn(MBUS_PASSWORD.encode(), body)
        self.assertNotIn(b"deep-secret", body)
        config = orjson.loads(body)["config"]
        self.assertNotIn("mbus", config)
        self.assertEqual(config["extra"], {"nested": {"keep": 1}})
        self.assertEqual(config["bulk_api"], {"host": "http://cc.example"})

    def test_healthz(self):
        """/healthz answers exactly `ok` as text/plain while NATS is connected, and 503
        with `unavailable: ` and the reason when it is not."""
        code, headers, body = self.get(b"/healthz")
        self.assertEqual((code, headers[b"content-type"], body), (200, b"text/plain", b"ok"))
        self.connected = False
        code, headers, body = self.get(b"/healthz")
        self.assertEqual((code, headers[b"content-type"], body),
                         (503, b"text/plain", b"unavailable: NATS is not connected\n"))

    def test_healthz_json(self):
        """?format=json, or an Accept header preferring application/json, answers the
        structured view, with the same status codes."""
        for path, headers in ((b"/healthz?format=json", ()),
                              (b"/healthz", ((b"Accept", b"application/json"),))):
            self.connected = True
            code, response_headers, body = self.get(path, headers=headers)
            self.assertEqual((code, response_headers[b"content-type"]),
                             (200, b"application/json"))
            self.assertEqual(orjson.loads(body), {
                "status": "ok", "nats": "connected", "desired_state": "fresh",
                "actual_state": "waiting", "ha_role": "single", "reasons": []})
            self.connected = False
            code, _headers, body = self.get(path, headers=headers)
            self.assertEqual(code, 503)
            health = orjson.loads(body)
            self.assertEqual((health["status"], health["nats"]),
                             ("unavailable", "disconnected"))
            self.assertEqual(health["reasons"], ["NATS is not connected"])

    def test_healthz_format_beats_accept(self):
        """format=text answers text even to an Accept of application/json; the answer
        varies by Accept, and says so to caches."""
        code, headers, body = self.get(b"/healthz?format=text",
                                       headers=((b"Accept", b"application/json"),))
        self.assertEqual((code, headers[b"content-type"], body), (200, b"text/plain", b"ok"))
        self.assertEqual(headers[b"vary"], b"Accept")

    def test_healthz_unknown_format(self):
        """Another format answers 400 naming the parameter, never `ok`."""
        code, headers, body = self.get(b"/healthz?format=xml")
        self.assertEqual((code, headers[b"content-type"]), (400, b"text/plain"))
        self.assertEqual(body, b"format must be json or text, got 'xml'\n")

    def test_healthz_desired_state_lost(self):
        """/healthz answers 503 once the desired state is stale for longer than
        desired_state_lost, and names the time it went stale."""
        self.desired.fresh = False
        self.clock.advance(180)
        self.assertEqual(self.get(b"/healthz")[::2], (200, b"ok"))
        self.clock.advance(1)
        code, _headers, body = self.get(b"/healthz")
        self.assertEqual((code, body), (503, b"unavailable: desired state stale since "
                                              b"23:26:39 (over desired_state_lost, 180 s)\n"))
        code, _headers, body = self.get(b"/healthz?format=json")
        self.assertEqual(code, 503)
        health = orjson.loads(body)
        self.assertEqual(health["desired_state"], "stale")
        self.assertEqual(health["reasons"], [
            "desired state stale since 23:26:39 (over desired_state_lost, 180 s)"])

    def test_unknown_path(self):
        """Paths the status port does not serve answer 404."""
        for path in (b"/varz/", b"/healthz/x", b"/nope", b"/v1/apps/a/b", b"/v1/apps/"):
            self.assertEqual(self.get(path)[0], 404)

    def test_other_methods(self):
        """Methods other than GET and HEAD answer 405 with an Allow header."""
        for method in (b"POST", b"PUT", b"DELETE"):
            code, headers, _body = self.get(b"/varz", method)
            self.assertEqual(code, 405)
            self.assertEqual(headers[b"allow"], b"GET, HEAD")

    def test_head(self):
        """HEAD answers the GET headers (with its length) and no body."""
        for path in (b"/healthz", b"/healthz?format=json"):
            _code, _headers, get_body = self.get(path)
            code, headers, body = self.get(path, b"HEAD")
            self.assertEqual((code, body), (200, b""))
            self.assertEqual(headers[b"content-length"], b"%d" % len(get_body))
