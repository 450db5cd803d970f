"""Integration: a NatsBus whose NATS server does not exist backs off (capped) and logs the
outage once, not once per attempt."""

from twisted.internet import task
from twisted.trial.unittest import TestCase

from health_manager.bus import NatsBus
from health_manager.simulation.nats_server import NatsServer, free_port
from spec.integration.support import LogCapture, wait_until


class UnreachableNatsTests(TestCase):
    timeout = 30

    async def test_backoff_and_one_line(self):
        """Over 7 s with nothing listening: attempts at a growing interval (capped at
        max_retry_delay), one "unreachable" line; once a server appears the bus connects
        and says after how many attempts."""
        from twisted.internet import reactor

        logs = LogCapture()
        self.addCleanup(logs.stop)
        port = free_port()
        bus = NatsBus(reactor, f"nats://127.0.0.1:{port}", reconnect_time_wait=0.5,
                      max_retry_delay=2.0, connect_timeout=0.5)
        self.addCleanup(bus.stop)
        bus.start()
        await task.deferLater(reactor, 7, lambda: None)
        attempts = bus._outage.failures
        # A constant 0.5 s wait would make about 14 attempts; 0.5, 1, 2, 2, ... makes ~5.
        self.assertGreaterEqual(attempts, 3)
        self.assertLessEqual(attempts, 7)
        self.assertEqual(logs.count("NATS unreachable at"), 1, logs.text())
        self.assertEqual(logs.count("NATS"), 1, logs.text())
        nats = NatsServer(port=port).start()
        self.addCleanup(nats.stop)
        await wait_until(lambda: bus.connected, timeout=10, what="connected")
        self.assertRegex(logs.text(), r"NATS connected to \S+ after \d+ s and \d+ failed")
