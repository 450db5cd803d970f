"""NatsBus on a cluster of three real nats-servers: it is on one, fails over to another
when that one dies (also to a member it only learnt of from the cluster), its subscriptions
still receive each message once, and it names the server it is on.

Run on the asyncio reactor: trial --reactor=asyncio spec.integration.test_bus_nats_cluster
"""

import re
import time
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.trial import unittest

from health_manager.simulation.nats_server import NatsCluster
from spec.integration.test_bus_nats import PASSWORD, USER, NatsTestMixin

if not hasattr(reactor, "_asyncioEventloop"):
    skip = "NatsBus needs the asyncio reactor: run trial with --reactor=asyncio"


class NatsClusterFailoverTests(NatsTestMixin, unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.cluster = NatsCluster(3, user=USER, password=PASSWORD)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()

    def port_of(self, bus):
        return urlsplit(bus.server).port

    async def fail_over(self, bus_url):
        """A bus on `bus_url` and a publisher on a member other than the bus's; kill the
        bus's member. Returns (bus, received, log lines, seconds to reconnect)."""
        log = self.capture_log()
        bus = self.make_bus(bus_url)
        received = []
        await bus.subscribe("cluster.test", lambda message: received.append(message.data))
        await bus.start()
        await self.until(lambda: bus.connected)
        first = self.cluster.member_on(self.port_of(bus))
        publisher = self.make_bus(next(s.url for s in self.cluster.servers if s is not first))
        await publisher.start()
        await self.until(lambda: publisher.connected)
        await bus.flush()
        publisher.publish("cluster.test", b"before")
        await self.until(lambda: received == [b"before"])

        killed_at = time.monotonic()
        first.kill()
        # The switch can be over between two polls: wait for the reconnection itself.
        await self.until(lambda: bus.connected and bus.reconnects == 1, timeout=5)
        seconds = time.monotonic() - killed_at
        self.assertNotEqual(self.port_of(bus), first.port)
        # The new member knows of the subscription once the bus has flushed its SUBs, and
        # the publisher's member once the route carries the interest over.
        await bus.flush()
        self.cluster.wait_routed()
        publisher.publish("cluster.test", b"after")
        await self.until(lambda: b"after" in received)
        await self.pass_time(0.3)
        self.assertEqual(received, [b"before", b"after"])
        self.assertNotIn(PASSWORD, "\n".join(log))
        return bus, log, first, seconds

    async def test_fails_over_to_another_listed_member(self):
        """mbus lists all three: killing the one the bus is on moves it to another within
        seconds, subscriptions intact, and the log names both servers."""
        bus, log, first, seconds = await self.fail_over(self.cluster.url)
        self.assertLess(seconds, 3)
        self.assertEqual(bus.reconnects, 1)
        text = "\n".join(log)
        self.assertIn(f"NATS connected to nats://{USER}:***@127.0.0.1:{first.port}\n", text + "\n")
        self.assertIn(f"NATS disconnected from nats://{USER}:***@127.0.0.1:{first.port}", text)
        moved = re.search(r"NATS connected to (\S+) after \d+ s", text)
        self.assertIsNotNone(moved, text)
        self.assertEqual(moved.group(1), bus.server)
        print(f"\nfailed over in {seconds:.2f} s")

    async def test_fails_over_to_a_member_the_cluster_announced(self):
        """mbus lists one member: the others come from the cluster (INFO connect_urls,
        without credentials), and the bus authenticates to them with the same ones."""
        only = self.cluster.servers[0]
        bus, _log, first, _seconds = await self.fail_over(only.url)
        self.assertIs(first, only)
        self.assertTrue(bus.server.startswith(f"nats://{USER}:***@127.0.0.1:"), bus.server)

    async def test_server_is_none_while_every_member_is_down(self):
        """With the whole cluster down the bus is on no server; it is again on one when a
        member comes back."""
        bus = self.make_bus(self.cluster.url)
        await bus.start()
        await self.until(lambda: bus.connected)
        self.cluster.stop()
        await self.until(lambda: not bus.connected)
        self.assertIsNone(bus.server)
        back = self.cluster.servers[2]
        back.start()
        await self.until(lambda: bus.connected, timeout=5)
        self.assertEqual(self.port_of(bus), back.port)
