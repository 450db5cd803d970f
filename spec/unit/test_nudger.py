"""The Nudger: de-duplicating priority set, rate limit, direct stops and flapping starts."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import HIGH, LOW, NORMAL
from health_manager.metrics import Metrics
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.orders import described_droplet, start_order, stop_order


def builder(droplet, index=0):
    """A queue_start() order builder for `droplet` and `index`."""
    return lambda: start_order(droplet, index)


class NudgerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.bus = InMemoryBus(self.clock)
        self.metrics = Metrics()
        self.nudger = Nudger(Scheduler(self.clock), self.bus, self.metrics, 2, 1.0)

    def sent(self):
        return [p["droplet"] for p in self.bus.published_json("health.start")]

    def queue(self, droplet, priority, index=0):
        self.nudger.queue_start(droplet, index, priority, builder(droplet, index))

    def exhaust_budget(self):
        self.queue("warm-1", LOW)
        self.queue("warm-2", LOW)
        self.bus.clear()

    def test_start_leaves_at_once_within_budget(self):
        """A queued start is published at once when the rate limit allows."""
        self.queue("a", LOW)
        self.assertEqual(self.sent(), ["a"])
        self.assertEqual(self.metrics.health_start_messages_sent, 1)
        self.assertEqual(len(self.nudger), 0)

    def test_rate_limit_batch_size_per_period(self):
        """At most batch_size starts leave per period; the rest wait for drain()."""
        for name in "abcde":
            self.queue(name, NORMAL)
        self.assertEqual(self.sent(), ["a", "b"])
        self.clock.advance(0.5)
        self.assertEqual(self.nudger.drain(), 0)
        self.clock.advance(0.5)
        self.nudger.drain()
        self.assertEqual(self.sent(), ["a", "b", "c", "d"])
        self.assertEqual(len(self.nudger), 1)
        self.assertEqual(self.metrics.varz()["queue_length"], 1)

    def test_priority_order_then_fifo(self):
        """Waiting starts leave highest priority first, FIFO within a priority."""
        self.exhaust_budget()
        for name, priority in (("low", LOW), ("n1", NORMAL), ("high", HIGH), ("n2", NORMAL)):
            self.queue(name, priority)
        self.clock.advance(1)
        self.nudger.drain()
        self.clock.advance(1)
        self.nudger.drain()
        self.assertEqual(self.sent(), ["high", "n1", "n2", "low"])

    def test_same_key_queued_once(self):
        """A start for an app and index already queued is not queued again."""
        self.exhaust_budget()
        self.queue("a", LOW)
        self.queue("a", LOW)
        self.queue("a", LOW, index=1)
        self.assertEqual(len(self.nudger), 2)

    def test_payload_built_when_the_start_leaves(self):
        """A queued start's payload is built as it leaves, from the state at that moment:
        its `running` is never stale (HM 2.0 queued finished payloads)."""
        self.exhaust_budget()
        droplet = described_droplet("a", instances=3)
        self.nudger.queue_start("a", 0, LOW, lambda: start_order("a", droplet=droplet))
        for index in (1, 2):
            droplet.instance("v1", index, 0).receive_heartbeat("RUNNING", f"g{index}", 0, 0, 30)
        self.clock.advance(1)
        self.nudger.drain()
        self.assertEqual([p["running"] for p in self.bus.published_json("health.start")],
                         [{"v1": 2}])

    def test_start_no_longer_needed_is_dropped(self):
        """A queued start whose builder says it is no longer needed is not sent, and does
        not use the rate limit."""
        self.exhaust_budget()
        self.nudger.queue_start("gone", 0, HIGH, lambda: None)
        self.queue("a", LOW)
        self.clock.advance(1)
        self.assertEqual(self.nudger.drain(), 1)
        self.assertEqual(self.sent(), ["a"])
        self.assertEqual(self.metrics.queued_starts_dropped, 1)

    def test_duplicate_at_higher_priority_raises_queued_start(self):
        """A duplicate at a higher priority raises the queued start (unlike HM 2.0)."""
        self.exhaust_budget()
        self.queue("b", NORMAL)
        self.queue("a", LOW)
        self.queue("a", HIGH)
        self.assertEqual(len(self.nudger), 2)
        self.clock.advance(1)
        self.nudger.drain()
        self.assertEqual(self.sent(), ["a", "b"])

    def test_stop_is_immediate(self):
        """A stop is published at once, outside the rate limit, and counted."""
        self.exhaust_budget()
        order = stop_order("a", {"g": ("v1", 1)}, running={"v1": 2})
        self.assertTrue(self.nudger.publish_stop(order))
        self.assertEqual(self.bus.published_json("health.stop"), [
            {"droplet": "a", "last_updated": 100, "instances": {"g": "v1"},
             "running": {"v1": 2}, "version": "v1"}])
        self.assertEqual(self.metrics.health_stop_messages_sent, 1)

    def test_stop_without_instances_refused(self):
        """A health.stop with an empty instances map is never published."""
        self.assertFalse(self.nudger.publish_stop(stop_order("a", {})))
        self.assertEqual(self.bus.published, [])
        self.assertEqual(self.metrics.health_stop_messages_sent, 0)

    def test_an_instance_stopped_lately_is_not_named_again(self):
        """Within the repeat window a stop names only instances not stopped lately; after
        it, an instance still there is stopped again."""
        nudger = Nudger(Scheduler(self.clock), self.bus, self.metrics, 2, 1.0,
                        stop_repeat_window=30)
        self.assertTrue(nudger.publish_stop(stop_order("a", {"g": ("v1", 1)})))
        self.clock.advance(10)
        self.assertFalse(nudger.publish_stop(stop_order("a", {"g": ("v1", 1)})))
        self.assertTrue(nudger.publish_stop(stop_order("a", {"g": ("v1", 1),
                                                             "h": ("v1", 2)})))
        self.clock.advance(20)
        self.assertTrue(nudger.publish_stop(stop_order("a", {"g": ("v1", 1)})))
        self.assertEqual([sorted(p["instances"]) for p in
                          self.bus.published_json("health.stop")],
                         [["g"], ["h"], ["g"]])

    def test_publish_start_bypasses_queue(self):
        """A direct (flapping) start leaves even when the rate limit is spent."""
        self.exhaust_budget()
        self.nudger.publish_start(start_order("flap", flapping=True))
        self.assertEqual(self.sent(), ["flap"])

    def test_discard_pending(self):
        """discard_pending drops every queued start and says how many."""
        self.exhaust_budget()
        self.queue("a", LOW)
        self.queue("b", HIGH)
        self.assertEqual(self.nudger.discard_pending(), 2)
        self.clock.advance(1)
        self.assertEqual(self.nudger.drain(), 0)
        self.assertEqual(len(self.nudger), 0)
