"""InMemoryBus: the shared bus behaviour, plus what tests rely on (recording, round robin)."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from health_manager.interfaces import BusMessage, RequestTimeout
from health_manager.testing.bus import InMemoryBus, subject_matches
from spec.bus_behaviour import BusBehaviourMixin


class InMemoryBusBehaviourTests(BusBehaviourMixin, unittest.TestCase):
    """Delivery is synchronous, so "letting things happen" is a no-op."""

    def setUp(self):
        self.clock = Clock()

    def make_bus(self):
        bus = InMemoryBus(self.clock)
        self.addCleanup(bus.stop)
        return bus

    def settle(self):
        return defer.succeed(None)

    def pass_time(self, seconds):
        self.clock.advance(seconds)
        return defer.succeed(None)

    def until(self, predicate):
        self.assertTrue(predicate())
        return defer.succeed(None)


class SubjectMatchTests(unittest.SynchronousTestCase):

    def test_literal_subjects_match_exactly(self):
        """A subject without wildcards matches only itself."""
        self.assertTrue(subject_matches("dea.heartbeat", "dea.heartbeat"))
        self.assertFalse(subject_matches("dea.heartbeat", "dea.heartbeat.x"))
        self.assertFalse(subject_matches("dea.heartbeat", "dea"))

    def test_star_matches_one_token(self):
        """`*` matches exactly one token, in any position."""
        self.assertTrue(subject_matches("a.*.c", "a.b.c"))
        self.assertFalse(subject_matches("a.*.c", "a.c"))
        self.assertFalse(subject_matches("a.*", "a.b.c"))

    def test_greater_than_matches_the_rest(self):
        """`>` matches one or more trailing tokens, never none."""
        self.assertTrue(subject_matches(">", "a"))
        self.assertTrue(subject_matches("a.>", "a.b.c"))
        self.assertFalse(subject_matches("a.>", "a"))


class InMemoryBusTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.bus = InMemoryBus(self.clock)
        self.bus.start()

    def test_publications_are_recorded(self):
        """Every publication is recorded in order, whether or not anyone listens."""
        self.bus.publish("health.start", b'{"droplet":"a"}')
        self.bus.publish_json("health.stop", {"droplet": "b"})
        self.assertEqual(self.bus.published, [
            BusMessage("health.start", b'{"droplet":"a"}'),
            BusMessage("health.stop", b'{"droplet":"b"}')])

    def test_published_json_decodes_by_subject(self):
        """published_json decodes the payloads on matching subjects only."""
        self.bus.publish_json("health.start", {"n": 1})
        self.bus.publish_json("health.stop", {"n": 2})
        self.bus.publish_json("health.start", {"n": 3})
        self.assertEqual(self.bus.published_json("health.start"), [{"n": 1}, {"n": 3}])
        self.assertEqual(self.bus.published_json("health.*"), [{"n": 1}, {"n": 2}, {"n": 3}])

    def test_clear_forgets_publications(self):
        """clear empties the record, leaving subscriptions alone."""
        received = []
        self.bus.subscribe("x", received.append)
        self.bus.publish("x", b"1")
        self.bus.clear()
        self.bus.publish("x", b"2")
        self.assertEqual(self.bus.published, [BusMessage("x", b"2")])
        self.assertEqual(len(received), 2)

    def test_delivery_in_subscription_order(self):
        """Subscribers are called in the order they subscribed."""
        calls = []
        for name in "abc":
            self.bus.subscribe("x", lambda m, name=name: calls.append(name))
        self.bus.publish("x", b"")
        self.assertEqual(calls, ["a", "b", "c"])

    def test_queue_group_round_robin(self):
        """Queue-group members take turns, one message each."""
        calls = []
        for name in "ab":
            self.bus.subscribe("health.start", lambda m, name=name: calls.append(name),
                               queue="cc")
        for _ in range(4):
            self.bus.publish("health.start", b"")
        self.assertEqual(calls, ["a", "b", "a", "b"])

    def test_unsubscribed_during_delivery_is_skipped(self):
        """A subscriber unsubscribed by an earlier callback misses that same message."""
        calls = []
        later = []

        def first(message):
            calls.append("first")
            later[0].unsubscribe()

        self.bus.subscribe("x", first)
        later.append(self.successResultOf(self.bus.subscribe("x", lambda m: calls.append("x"))))
        self.bus.publish("x", b"")
        self.assertEqual(calls, ["first"])

    def test_publish_is_independent_of_connection_state(self):
        """Messages are delivered even while `connected` is False (it only reports state)."""
        received = []
        self.bus.subscribe("x", received.append)
        self.bus.set_connected(False)
        self.bus.publish("x", b"")
        self.assertEqual(len(received), 1)

    def test_set_connected_notifies_on_change_only(self):
        """Listeners hear each change of connection state once; repeats are silent."""
        heard = []
        self.bus.add_connection_listener(heard.append)
        self.bus.set_connected(True)
        self.bus.set_connected(False)
        self.bus.set_connected(False)
        self.bus.set_connected(True)
        self.assertEqual(heard, [False, True])
        self.assertTrue(self.bus.connected)

    def test_failing_listener_is_logged(self):
        """A connection listener that raises is logged and the others are still told."""
        heard = []

        def broken(connected):
            raise ValueError("listener bug")

        self.bus.add_connection_listener(broken)
        self.bus.add_connection_listener(heard.append)
        self.bus.set_connected(False)
        self.assertEqual(heard, [False])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_request_cleans_up_after_reply(self):
        """A request answered in full leaves no inbox subscription and no timer behind."""
        self.bus.subscribe("echo", lambda m: self.bus.publish(m.reply, b"pong"))
        replies = self.successResultOf(self.bus.request("echo", b"ping", timeout=5))
        self.assertEqual([r.data for r in replies], [b"pong"])
        self.assertEqual([s.subject for s in self.bus.subscriptions], ["echo"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_request_fails_only_at_timeout(self):
        """An unanswered request is still waiting just before its timeout."""
        pending = self.bus.request("nobody", timeout=2)
        self.clock.advance(1.9)
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        self.failureResultOf(pending, RequestTimeout)
        self.assertEqual(self.bus.subscriptions, [])

    def test_request_uses_unique_inboxes(self):
        """Each request publishes with its own reply inbox."""
        pending = [self.bus.request("a", timeout=1) for _ in range(2)]
        inboxes = [m.reply for m in self.bus.published]
        self.assertEqual(len(set(inboxes)), 2)
        self.assertTrue(all(inbox.startswith("_INBOX.") for inbox in inboxes))
        self.clock.advance(1)
        for request in pending:
            self.failureResultOf(request, RequestTimeout)

    def test_cancelled_request_cleans_up(self):
        """Cancelling a request drops its inbox subscription and its timer."""
        pending = self.bus.request("nobody", timeout=5)
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)
        self.assertEqual(self.bus.subscriptions, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late_replies_are_ignored(self):
        """Replies beyond `max_replies` do not reach the finished request."""
        self.bus.subscribe("census", lambda m: [self.bus.publish(m.reply, b"r") for _ in "123"])
        replies = self.successResultOf(self.bus.request("census", timeout=1, max_replies=2))
        self.assertEqual(len(replies), 2)

    def test_subscribed_subjects_exclude_inboxes(self):
        """subscribed_subjects lists what the code under test subscribed to, not inboxes."""
        self.bus.subscribe("dea.heartbeat", lambda m: None)
        pending = self.bus.request("nobody", timeout=1)
        self.assertEqual(self.bus.subscribed_subjects(), ["dea.heartbeat"])
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)

    def test_stop_reports_disconnected(self):
        """stop fires at once and leaves the bus disconnected."""
        self.successResultOf(self.bus.stop())
        self.assertFalse(self.bus.connected)
