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
