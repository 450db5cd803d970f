"""Black-box mode: advance_time requests are validated and advance the fake clock."""

import orjson
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.blackbox import MAX_SECONDS, SUBJECT, BlackBoxDriver, parse_request
from health_manager.metrics import Metrics
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus


class ParseRequestTests(SynchronousTestCase):
    def test_valid(self):
        """{"seconds": N} with a whole N >= 0 is accepted; 0 is the readiness probe."""
        self.assertEqual(parse_request(b'{"seconds": 15}'), (15, None))
        self.assertEqual(parse_request(b'{"seconds": 0}'), (0, None))

    def test_invalid(self):
        """Negative, non-integer, huge and garbage requests are refused with a reason."""
        for data in (b'{"seconds": -1}', b'{"seconds": 1.5}', b'{"seconds": "3"}',
                     b'{"seconds": true}', orjson.dumps({"seconds": MAX_SECONDS + 1}),
                     b"garbage", b"[]", b"{}", b'{"seconds": 1e400}'):
            seconds, error = parse_request(data)
            self.assertIsNone(seconds, data)
            self.assertIsInstance(error, str)


class DriverTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1)
        self.reactor = task.Clock()
        self.scheduler = Scheduler(self.clock, eventual=self.reactor)
        self.bus = InMemoryBus(self.reactor)
        self.bus.start()
        self.metrics = Metrics()
        self.driver = BlackBoxDriver(self.bus, self.clock, self.scheduler, self.reactor,
                                     self.metrics)
        self.driver.subscribe()
        self.replies = []
        self.bus.subscribe("reply", lambda m: self.replies.append(orjson.loads(m.data)))

    def ask(self, data):
        self.bus.publish(SUBJECT, data, reply="reply")
        for _ in range(10):
            self.reactor.advance(0)

    def test_advance_runs_due_work_one_second_at_a_time(self):
        """advance_time N moves the fake clock N seconds, running what falls due at each
        step, and replies with the same payload."""
        seen = []
        self.scheduler.at_interval(2, lambda: seen.append(self.clock.seconds()), "t")
        self.scheduler.start()
        self.ask(b'{"seconds": 5}')
        self.assertEqual(seen, [3, 5])
        self.assertEqual(self.clock.seconds(), 6)
        self.assertEqual(self.replies, [{"seconds": 5}])

    def test_reply_waits_for_work_in_flight(self):
        """The reply is published only after work started by the step has finished."""
        work = defer.Deferred()
        self.scheduler.at_interval(1, lambda: work, "slow")
        self.scheduler.start()
        self.ask(b'{"seconds": 1}')
        self.assertEqual(self.replies, [])
        work.callback(None)
        for _ in range(10):
            self.reactor.advance(0)
        self.assertEqual(self.replies, [{"seconds": 1}])

    def test_invalid_request_changes_nothing(self):
        """A bad request gets an error reply and leaves the clock where it was."""
        self.ask(b'{"seconds": -3}')
        self.assertEqual(self.clock.seconds(), 1)
        self.assertEqual(list(self.replies[0]), ["error"])
        self.assertEqual(self.metrics.rejected_messages, {SUBJECT: 1})

    def test_fake_clock_starts_at_one(self):
        """The Manager's black-box clock starts at 1, not 0."""
        from health_manager.config import build_config
        from health_manager.manager import Manager

        config, _ = build_config({"mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "h"},
                                  "black_box_test_mode": True}, {})
        manager = Manager(config, self.reactor, bus=self.bus, http_client=object())
        self.assertEqual(manager.scheduler.now(), 1)
