"""Unit tests: a NATS outage is logged when it begins and ends, with a reminder a minute,
never a line per connection attempt."""

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from health_manager.bus import OutageLog


class OutageLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.outage = OutageLog(self.clock, "nats://h:4222", cap=10)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_first_failure_then_a_reminder_a_minute(self):
        """The first failed attempt logs once; later ones are silent except one reminder
        per minute, which says how long and how many attempts."""
        for _ in range(130):
            self.outage.failed("Connection refused", 1.0)
            self.clock.advance(1)
        lines = self.lines()
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(lines[0], "NATS unreachable at nats://h:4222: Connection refused; "
                                   "retrying after 1 s, backing off to every 10 s; a reminder "
                                   "every 60 s")
        self.assertEqual(lines[1], "NATS still unreachable at nats://h:4222 after 60 s and "
                                   "61 attempts: Connection refused")

    def test_connected_reports_the_outage(self):
        """Connecting ends the outage and reports its length and failed attempts; the next
        failure starts a new one."""
        self.outage.failed("refused", 1.0)
        self.clock.advance(7)
        self.outage.failed("refused", 2.0)
        self.assertEqual(self.outage.connected(), (7, 2))
        self.assertIsNone(self.outage.connected())
        self.outage.failed("refused", 1.0)
        self.assertEqual(len(self.lines()), 2)

    def test_after_a_disconnect_failures_are_quiet(self):
        """After a disconnect (logged by the bus itself) the retries log nothing until the
        reminder is due."""
        self.outage.disconnected()
        for _ in range(30):
            self.clock.advance(1)
            self.outage.failed("refused", 1.0)
        self.assertEqual(self.lines(), [])


class ClusterOutageLogTests(SynchronousTestCase):
    """With a cluster's three servers, one refusing is no outage: NATS is unreachable once
    as many attempts as there are servers have failed."""

    def setUp(self):
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.outage = OutageLog(self.clock, "nats://a:4222,nats://b:4222,nats://c:4222",
                                cap=10, servers=3)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_unreachable_once_every_server_failed(self):
        self.outage.failed("refused by a", 1.0)
        self.outage.failed("refused by b", 1.0)
        self.assertEqual(self.lines(), [])
        self.clock.advance(1)
        self.outage.failed("refused by c", 1.0)
        self.assertEqual(self.lines(), [
            "NATS unreachable at nats://a:4222,nats://b:4222,nats://c:4222: refused by c; "
            "retrying after 1 s, backing off to every 10 s; a reminder every 60 s"])
        self.clock.advance(60)
        self.outage.failed("refused by a", 1.0)
        self.assertEqual(len(self.lines()), 2)
        self.assertIn("after 61 s and 4 attempts", self.lines()[1])

    def test_one_member_down_then_connected_logs_nothing(self):
        """A dead member tried first, then a live one: no line, and the count is reset."""
        self.outage.failed("refused by a", 1.0)
        self.assertEqual(self.outage.connected(), (0, 1))
        self.outage.failed("refused by a", 1.0)
        self.outage.failed("refused by b", 1.0)
        self.assertEqual(self.lines(), [])
