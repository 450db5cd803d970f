"""NatsBus against a real nats-server: the shared bus behaviour, outages, restarts and stop.

Run serially on the asyncio reactor: trial --reactor=asyncio spec.integration.test_bus_nats
"""

import time

import nats.aio.client
from twisted.internet import protocol, reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from health_manager.bus import NatsBus
from health_manager.simulation.nats_server import NatsServer, free_port
from spec.bus_behaviour import BusBehaviourMixin

USER, PASSWORD = "hm", "s3cret-pa55"

if not hasattr(reactor, "_asyncioEventloop"):
    skip = "NatsBus needs the asyncio reactor: run trial with --reactor=asyncio"


class NatsTestMixin:
    """Buses with fast retries, stopped in cleanup; polling helpers on the real reactor."""

    def make_bus(self, url=None, **kwargs):
        kwargs.setdefault("reconnect_time_wait", 0.1)
        kwargs.setdefault("max_retry_delay", 0.5)
        bus = NatsBus(reactor, url or self.server.url, **kwargs)
        self.addCleanup(bus.stop)
        return bus

    def settle(self):
        return deferLater(reactor, 0.1)

    def pass_time(self, seconds):
        return deferLater(reactor, seconds)

    async def until(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"condition not met within {timeout} s")
            await deferLater(reactor, 0.02)

    def start_server(self, port=None):
        server = NatsServer(port=port, user=USER, password=PASSWORD)
        self.addCleanup(server.stop)
        return server.start()

    def capture_log(self):
        lines = []

        def observe(event):
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines


class NatsBusBehaviourTests(NatsTestMixin, BusBehaviourMixin, unittest.TestCase):
    """A server with user/password per test: credentials come from the URL."""

    def setUp(self):
        self.server = self.start_server()


class NatsBusOutageTests(NatsTestMixin, unittest.TestCase):
    """Each test owns its server, so it can kill and restart it."""

    async def test_survives_server_restart_without_duplicates(self):
        """After the server dies and comes back on the same port, the bus reports
        disconnected then connected, and its subscriptions receive each message once."""
        server = self.start_server()
        bus = self.make_bus(server.url)
        heard, received = [], []
        bus.add_connection_listener(heard.append)
        await bus.start()
        await bus.subscribe("dea.heartbeat", received.append)
        await self.until(lambda: bus.connected)

        server.kill()
        await self.until(lambda: not bus.connected)
        self.assertEqual(heard, [True, False])
        self.start_server(server.port)
        await self.until(lambda: bus.connected)
        self.assertEqual(heard, [True, False, True])

        publisher = self.make_bus(server.url)
        await publisher.start()
        await self.until(lambda: publisher.connected)
        for i in range(5):
            publisher.publish("dea.heartbeat", str(i).encode())
        await publisher.flush()
        await self.until(lambda: len(received) >= 5)
        await self.settle()
        self.assertEqual([m.data for m in received], [str(i).encode() for i in range(5)])

    async def test_publications_while_disconnected_are_sent_on_reconnect(self):
        """Publications made during an outage are buffered and delivered after reconnect."""
        server = self.start_server()
        bus = self.make_bus(server.url)
        received = []
        await bus.start()
        await bus.subscribe("health.start", received.append)
        await self.until(lambda: bus.connected)
        server.kill()
        await self.until(lambda: not bus.connected)
        bus.publish("health.start", b"during outage")
        self.start_server(server.port)
        await self.until(lambda: received)
        self.assertEqual([m.data for m in received], [b"during outage"])
        self.assertEqual(bus.dropped_publications, 0)

    async def test_publication_beyond_the_buffer_is_dropped_and_counted(self):
        """During an outage, a publication that does not fit the buffer is dropped, logged
        and counted; publish never raises."""
        server = self.start_server()
        bus = self.make_bus(server.url, pending_size=1000)
        lines = self.capture_log()
        await bus.start()
        await self.until(lambda: bus.connected)
        server.kill()
        await self.until(lambda: not bus.connected)
        bus.publish("health.start", b"x" * 2000)
        await self.until(lambda: bus.dropped_publications == 1)
        self.assertTrue([line for line in lines if "health.start dropped" in line])

    async def test_keeps_retrying_until_server_appears(self):
        """With no server reachable, start returns at once, the attempts go on (logged
        once, not each), `connected` stays False, and the bus connects once the server
        appears."""
        lines = self.capture_log()
        port = free_port()
        bus = self.make_bus(f"nats://{USER}:{PASSWORD}@127.0.0.1:{port}")
        received = []
        started = bus.start()
        self.assertTrue(started.called)
        await bus.subscribe("droplet.exited", received.append)
        await self.until(lambda: bus.failed_attempts >= 3)
        self.assertFalse(bus.connected)
        self.assertEqual(len([line for line in lines if "NATS unreachable" in line]), 1, lines)

        self.start_server(port)
        await self.until(lambda: bus.connected)
        bus.publish("droplet.exited", b"{}")
        await self.until(lambda: received)
        self.assertEqual(len(received), 1)

    async def test_logs_never_show_the_password(self):
        """Connection failures are logged with the password redacted."""
        lines = self.capture_log()
        bus = self.make_bus(f"nats://{USER}:{PASSWORD}@127.0.0.1:{free_port()}")
        await bus.start()
        await self.until(lambda: bus.failed_attempts >= 2)
        await bus.stop()
        self.assertTrue(any("***" in line for line in lines))
        self.assertFalse([line for line in lines if PASSWORD in line])

    async def test_wrong_password_keeps_retrying(self):
        """A refused login is logged (once, with the cause) and retried; it never
        connects."""
        server = self.start_server()
        lines = self.capture_log()
        bus = self.make_bus(f"nats://{USER}:wrong@127.0.0.1:{server.port}")
        await bus.start()
        await self.until(lambda: bus.failed_attempts >= 2)
        self.assertFalse(bus.connected)
        [line] = [line for line in lines if "NATS unreachable" in line]
        self.assertIn("uthorization", line)

    async def test_connect_call_that_raises_is_retried(self):
        """When the client's connect call itself raises, the bus retries with a new client."""
        server = self.start_server()
        lines = self.capture_log()
        attempts = []

        def flaky_client():
            client = nats.aio.client.Client()
            if not attempts:
                async def refuse(**options):
                    raise RuntimeError("connect exploded")
                client.connect = refuse
            attempts.append(client)
            return client

        bus = self.make_bus(server.url, client_factory=flaky_client)
        await bus.start()
        await self.until(lambda: bus.connected)
        self.assertEqual(len(attempts), 2)
        self.assertTrue([l for l in lines if "connect exploded" in l and "retrying" in l])

    async def test_stop_returns_quickly_with_server_dead(self):
        """stop() returns within 5 s when the server is gone, and leaves the bus
        disconnected."""
        server = self.start_server()
        bus = self.make_bus(server.url)
        await bus.start()
        await bus.subscribe("dea.heartbeat", lambda m: None)
        await self.until(lambda: bus.connected)
        server.kill()
        bus.publish("health.start", b"never sent")
        began = time.monotonic()
        await bus.stop()
        self.assertLess(time.monotonic() - began, 5)
        self.assertFalse(bus.connected)

    async def test_no_connection_attempts_after_stop(self):
        """Once stop() returned, the bus never connects again, whether it stopped during
        an outage or just as the server died. (nats-py can lose a cancel while a connect
        attempt fails, so this repeats with fast retries to hit that moment.)"""
        server = self.start_server()
        for attempt in range(10):
            bus = self.make_bus(server.url, reconnect_time_wait=0.001)
            await bus.start()
            await self.until(lambda: bus.connected)
            server.kill()
            if attempt % 2:
                await self.until(lambda: not bus.connected)
                await self.pass_time(0.05)
            await bus.stop()
            server = self.start_server(server.port)
        server.kill()
        attempts = []
        factory = protocol.ServerFactory.forProtocol(protocol.Protocol)
        factory.buildProtocol = lambda addr: attempts.append(addr)
        port = reactor.listenTCP(server.port, factory, interface="127.0.0.1")
        await self.pass_time(0.3)
        await port.stopListening()
        self.assertEqual(attempts, [])

    async def test_stop_while_never_connected_returns_quickly(self):
        """stop() during the first connection attempts returns at once."""
        bus = self.make_bus(f"nats://127.0.0.1:{free_port()}")
        await bus.start()
        await self.pass_time(0.3)
        began = time.monotonic()
        await bus.stop()
        self.assertLess(time.monotonic() - began, 5)
        self.assertFalse(bus.connected)

    async def test_stop_drains_pending_publications(self):
        """Publications made just before stop() reach the server."""
        server = self.start_server()
        receiver, sender = self.make_bus(server.url), self.make_bus(server.url)
        received = []
        for bus in (receiver, sender):
            await bus.start()
            await self.until(lambda: bus.connected)
        await receiver.subscribe("health.stop", received.append)
        await receiver.flush()
        for i in range(100):
            sender.publish("health.stop", b"%d" % i)
        await sender.stop()
        await self.until(lambda: len(received) == 100)
