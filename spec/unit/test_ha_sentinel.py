"""Sentinel discovery in memory: which sentinel answer names the master, what the endpoint
logs, and the ROLE check that keeps a connection off a replica."""

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.ha.connection import RedisConnection, RedisUnavailable
from health_manager.ha.sentinel import (
    MasterOnlyProtocol,
    NoMasterFound,
    SentinelDiscovery,
    SentinelMasterEndpoint,
    first_master,
)

A, B = ("10.0.0.1", 26379), ("10.0.0.2", 26379)


def state(ip="10.0.1.1", port=6379, flags="master"):
    """One master's entry as txredisapi's sentinel_masters() parses it."""
    names = set(flags.split(","))
    return {"name": "hm", "ip": ip, "port": port, "flags": flags,
            "is_master": "master" in names, "is_sdown": "s_down" in names,
            "is_odown": "o_down" in names}


class Sentinel:
    """A sentinel connection handler whose SENTINEL MASTERS reply the test gives."""

    def __init__(self):
        self.replies = []

    def sentinel_masters(self):
        d = defer.Deferred()
        self.replies.append(d)
        return d


class FirstMasterTests(SynchronousTestCase):
    def test_first_usable_answer_wins(self):
        """The first sentinel to name an up master decides; a later answer is ignored."""
        a, b = Sentinel(), Sentinel()
        d = first_master("hm", [(A, a), (B, b)])
        b.replies[0].callback({"hm": state(port=6380)})
        a.replies[0].callback({"hm": state(port=6381)})
        self.assertEqual(self.successResultOf(d), ("10.0.1.1", 6380))

    def test_down_or_unknown_master_skipped(self):
        """A master flagged s_down or o_down, or not monitored, or an error: the next
        sentinel's answer is waited for."""
        a, b, c = Sentinel(), Sentinel(), Sentinel()
        d = first_master("hm", [(A, a), (B, b), (("10.0.0.3", 1), c)])
        a.replies[0].callback({"hm": state(flags="s_down,master")})
        b.replies[0].errback(ConnectionError("reply timeout"))
        self.assertNoResult(d)
        c.replies[0].callback({"hm": state(ip="10.0.1.2")})
        self.assertEqual(self.successResultOf(d), ("10.0.1.2", 6379))

    def test_none_usable(self):
        """Every sentinel answered and none named an up master: NoMasterFound says what
        each one said."""
        a, b, c = Sentinel(), Sentinel(), Sentinel()
        d = first_master("hm", [(A, a), (B, b), (("10.0.0.3", 1), c)])
        a.replies[0].callback({"other": state()})
        b.replies[0].callback({"hm": state(flags="s_down,o_down,master")})
        c.replies[0].errback(ConnectionError("Lost connection"))
        failure = self.failureResultOf(d, NoMasterFound)
        message = failure.getErrorMessage()
        self.assertIn("10.0.0.1:26379 does not monitor hm", message)
        self.assertIn("10.0.0.2:26379 has hm at 10.0.1.1:6379 as s_down,o_down,master",
                      message)
        self.assertIn("10.0.0.3:1: Lost connection", message)


def sentinel_config(**ha):
    config, _ = build_config({
        "mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "127.0.0.1"},
        "ha": dict({"sentinels": ["10.0.0.1:26379", "[::1]:26380"], "master_name": "hm",
                    "redis": "redis://:pw-never-shown@x:1/2", "retry_period": 0.5,
                    "renew_deadline": 2, "lease_duration": 3}, **ha)}, {})
    return config.ha


class DiscoveryTests(SynchronousTestCase):
    def test_no_sentinel_connected(self):
        """Before any sentinel is connected the question fails at once."""
        discovery = SentinelDiscovery(MemoryReactorClock(), [A, B], "hm", 0.5, 0.5)
        self.failureResultOf(discovery.master_address(), NoMasterFound)

    def test_connection_address_and_contract(self):
        """RedisConnection with sentinels: `address` names the sentinels and master, no
        password; unstarted, a call fails at once with RedisUnavailable."""
        conn = RedisConnection(MemoryReactorClock(), sentinel_config())
        self.assertEqual(conn.address, "sentinel 10.0.0.1:26379,[::1]:26380 master hm")
        self.assertFalse(conn.connected)
        self.failureResultOf(conn.call("get", "k"), RedisUnavailable)

    def test_start_connects_to_sentinels_only(self):
        """start() opens one TCP connection per sentinel; the master's address is asked
        for, and no other connection is made, until a sentinel answers."""
        reactor = MemoryReactorClock()
        conn = RedisConnection(reactor, sentinel_config())
        conn.start()
        reactor.advance(0)
        self.addCleanup(conn.stop)  # ClientService's retry timers are on the global reactor
        # MemoryReactor resolves every name to 127.0.0.1: the ports tell them apart.
        self.assertEqual(sorted(port for _, port, *_ in reactor.tcpClients), [26379, 26380])


class Discovery:
    """Answers master_address() with what the test puts in `answers`."""

    master_name = "hm"
    address = "sentinel 10.0.0.1:26379 master hm"

    def __init__(self, *answers):
        self.answers = list(answers)

    def master_address(self):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class EndpointTests(SynchronousTestCase):
    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self):
        return [formatEvent(e) for e in self.events if "HA:" in (formatEvent(e) or "")]

    def test_connects_to_the_named_master(self):
        """Each attempt connects to the address the sentinels give at that moment, and a
        new master is logged once."""
        reactor = MemoryReactorClock()
        endpoint = SentinelMasterEndpoint(
            reactor, Discovery(("10.0.1.1", 6379), ("10.0.1.1", 6379), ("10.0.1.2", 6380)),
            connect_timeout=0.5)
        verifyObject(IStreamClientEndpoint, endpoint)
        for _ in range(3):
            endpoint.connect(object())
            reactor.advance(0)
        # MemoryReactor resolves every name to 127.0.0.1: the ports tell them apart.
        self.assertEqual([port for _, port, *_ in reactor.tcpClients], [6379, 6379, 6380])
        self.assertEqual(self.messages(), [
            "HA: the sentinels name hm at 10.0.1.1:6379 as master",
            "HA: the sentinels name hm at 10.0.1.2:6380 as master"])

    def test_outage_warned_once(self):
        """No master: one warning from the second failed attempt in a row, none after;
        after a success a new outage is warned about again."""
        reactor = MemoryReactorClock()
        down = NoMasterFound("no sentinel connected")
        endpoint = SentinelMasterEndpoint(
            reactor, Discovery(down, down, down, ("10.0.1.1", 6379), down, down),
            connect_timeout=0.5)
        for _ in range(6):
            endpoint.connect(object()).addErrback(lambda f: f.trap(NoMasterFound))
        warnings = [m for m in self.messages() if "no master" in m]
        self.assertEqual(warnings, 2 * ["HA: no master from sentinel 10.0.0.1:26379 master "
                                        "hm: no sentinel connected"])


class Factory:
    """What MasterOnlyProtocol's base class asks of its factory."""

    isLazy = False  # noqa: N815 (txredisapi's name)

    def __init__(self):
        self.errors = []

    def stopTrying(self):  # noqa: N802 (txredisapi's name)
        self.stopped = True

    def connectionError(self, why):  # noqa: N802 (txredisapi's name)
        self.errors.append(why)


class MasterOnlyProtocolTests(SynchronousTestCase):
    def connect(self, password=None):
        protocol = MasterOnlyProtocol(password=password)
        # txredisapi parses bulk replies in a callLater(0) of the global reactor.
        self.clock = Clock()
        protocol.callLater = self.clock.callLater
        protocol.factory = Factory()
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def receive(self, protocol, data):
        protocol.dataReceived(data)
        self.clock.advance(0)

    def test_replica_dropped(self):
        """ROLE says slave: the connection is closed and never made usable."""
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")
        ready = protocol.whenConnected()
        self.receive(protocol, b"*5\r\n$5\r\nslave\r\n$8\r\n10.0.1.1\r\n:6379\r\n"
                               b"$9\r\nconnected\r\n:42\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(ready)

    def test_master_made_usable(self):
        """ROLE says master: the connection becomes usable."""
        protocol, transport = self.connect()
        ready = protocol.whenConnected()
        self.receive(protocol, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertIs(self.successResultOf(ready), protocol)

    def test_wrong_password_refused_by_base(self):
        """AUTH refused: the base class's AUTH reports the refusal to the factory."""
        protocol, transport = self.connect(password="wrong")
        self.receive(protocol, b"-WRONGPASS invalid username-password pair\r\n")
        self.receive(protocol, b"-NOAUTH Authentication required.\r\n")
        self.receive(protocol, b"-WRONGPASS invalid username-password pair\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(protocol.factory.errors), 1)
        self.assertIn("could not auth", protocol.factory.errors[0])
