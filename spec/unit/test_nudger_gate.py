"""The HA gate in the Nudger: nothing leaves unless is_acting() says so right then."""

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from health_manager.constants import LOW, NORMAL
from health_manager.interfaces import ILeadership
from health_manager.leadership import SingleLeadership
from health_manager.metrics import Metrics
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.orders import start_order, stop_order


@implementer(ILeadership)
class SwitchedLeadership:
    """Acting exactly while `acting` is True; counts how often it was asked."""

    def __init__(self, acting):
        self.acting = acting
        self.role = "leader" if acting else "standby"
        self.leader_id = "hm-a"
        self.epoch = 4
        self.transitions = 0
        self.asked = 0

    def is_acting(self):
        self.asked += 1
        return self.acting


def start(droplet, flapping=False):
    return start_order(droplet, flapping=flapping)


def queue(nudger, droplet, priority):
    """Queue a start of `droplet` index 0 whose order is built when it leaves."""
    nudger.queue_start(droplet, 0, priority, lambda: start(droplet))


def stop(droplet):
    return stop_order(droplet, {"g1": ("v1", 1)}, running={"v1": 2})


class NudgerGateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.bus = InMemoryBus(self.clock)
        self.metrics = Metrics()
        self.leadership = SwitchedLeadership(acting=True)
        self.metrics.set_leadership_source(self.leadership)
        self.nudger = Nudger(Scheduler(self.clock), self.bus, self.metrics, 2, 1.0,
                             leadership=self.leadership)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def published(self):
        return [m.subject for m in self.bus.published]

    def test_standby_sends_nothing_and_queues_nothing(self):
        """Not acting: queued, direct and flapping starts and stops are dropped and counted."""
        self.leadership.acting = False
        queue(self.nudger, "a", LOW)
        self.nudger.publish_start(start("b", flapping=True))
        self.assertFalse(self.nudger.publish_stop(stop("c")))
        self.clock.advance(5)
        self.nudger.drain()
        self.assertEqual(self.published(), [])
        self.assertEqual(len(self.nudger), 0)
        self.assertEqual(self.metrics.ha_suppressed_messages, 3)
        self.assertEqual(self.metrics.health_start_messages_sent, 0)

    def test_queue_dropped_when_acting_stops(self):
        """Starts waiting for the rate limit are dropped, not sent, once acting stops."""
        for name in "abcd":
            queue(self.nudger, name, NORMAL)
        self.assertEqual(len(self.nudger), 2)
        self.leadership.acting = False
        self.clock.advance(1)
        self.nudger.drain()
        self.assertEqual(len(self.nudger), 0)
        self.leadership.acting = True
        self.clock.advance(1)
        self.nudger.drain()
        self.assertEqual(len(self.bus.published_json("health.start")), 2)
        self.assertEqual(self.metrics.ha_suppressed_messages, 2)

    def test_asked_right_before_each_publication(self):
        """Every publication asks is_acting() at that moment, not a cached answer."""
        queue(self.nudger, "a", LOW)
        asked = self.leadership.asked
        self.nudger.publish_stop(stop("b"))
        self.nudger.publish_start(start("c"))
        self.assertEqual(self.leadership.asked, asked + 2)

    def test_one_log_line_per_transition(self):
        """Many dropped messages give one 'not acting' line; acting again gives one line."""
        self.leadership.acting = False
        for name in "abcdef":
            queue(self.nudger, name, LOW)
        self.leadership.acting = True
        queue(self.nudger, "g", LOW)
        lines = [e["log_format"].split(":")[0] for e in self.events
                 if e["log_format"].startswith(("acting", "not acting"))]
        self.assertEqual(lines, ["not acting", "acting"])

    def test_epoch_in_every_start_and_stop_line(self):
        """The 'sent health.start/stop' log lines carry the leadership's epoch."""
        queue(self.nudger, "a", LOW)
        self.nudger.publish_stop(stop("b"))
        sent = [e for e in self.events if e["log_format"].startswith("sent health.")]
        self.assertEqual([e["epoch"] for e in sent], [4, 4])
        self.assertTrue(all("{epoch}" in e["log_format"] for e in sent))

    def test_varz_shows_leadership(self):
        """/varz has ha_role, ha_leader, ha_epoch, ha_transitions (and suppressed count)."""
        varz = self.metrics.varz()
        self.assertEqual((varz["ha_role"], varz["ha_leader"], varz["ha_epoch"],
                          varz["ha_transitions"], varz["ha_suppressed_messages"]),
                         ("leader", "hm-a", 4, 0, 0))

    def test_single_hm_always_acts(self):
        """Without an injected leadership the Nudger acts as a lone HM did."""
        nudger = Nudger(Scheduler(self.clock), self.bus, Metrics(), 2, 1.0)
        queue(nudger, "a", LOW)
        self.assertEqual(self.published(), ["health.start"])
        metrics = Metrics()
        metrics.set_leadership_source(SingleLeadership())
        self.assertEqual(metrics.varz()["ha_role"], "single")
