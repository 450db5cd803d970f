"""Scheduler: periodic work that never dies or overlaps, cancellable one-shots, idle tracking."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.scheduler import Scheduler


class SchedulerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.scheduler = Scheduler(self.clock)
        self.calls = []

    def test_periodic_first_fires_one_period_after_start(self):
        """Periodic timers first fire one period after start (HM 2.0 §5.12)."""
        self.scheduler.at_interval(5, lambda: self.calls.append(self.clock.seconds()), "t")
        self.scheduler.start()
        self.clock.advance(4)
        self.assertEqual(self.calls, [])
        self.clock.pump([1, 5, 5])
        self.assertEqual(self.calls, [5, 10, 15])

    def test_raising_tick_keeps_running(self):
        """A tick that raises is logged and the timer keeps firing."""
        def boom():
            self.calls.append(1)
            raise ValueError("boom")
        self.scheduler.at_interval(1, boom, "boom")
        self.scheduler.start()
        self.clock.pump([1, 1, 1])
        self.assertEqual(len(self.calls), 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 3)

    def test_running_tick_is_not_started_again(self):
        """A tick whose Deferred has not fired is skipped, not stacked."""
        pending = defer.Deferred()
        self.scheduler.at_interval(1, lambda: self.calls.append(1) or pending, "slow")
        self.scheduler.start()
        self.clock.pump([1, 1, 1])
        self.assertEqual(len(self.calls), 1)
        pending.callback(None)
        self.clock.advance(1)
        self.assertEqual(len(self.calls), 2)

    def test_after_is_cancellable(self):
        """A delayed call's receipt cancels it."""
        receipt = self.scheduler.after(10, lambda: self.calls.append(1), "restart")
        self.assertTrue(receipt.active())
        receipt.cancel()
        self.clock.advance(20)
        self.assertEqual(self.calls, [])
        self.assertFalse(receipt.active())
        receipt.cancel()  # cancelling twice is harmless

    def test_immediately_runs_on_eventual_reactor(self):
        """`immediately` runs on the eventual reactor, not the fake clock."""
        eventual = task.Clock()
        scheduler = Scheduler(self.clock, eventual=eventual)
        scheduler.immediately(lambda: self.calls.append(1), "now")
        self.clock.advance(100)
        self.assertEqual(self.calls, [])
        eventual.advance(0)
        self.assertEqual(self.calls, [1])

    def test_idle_waits_for_tracked_work(self):
        """idle() fires only once every tracked Deferred has fired."""
        work = defer.Deferred()
        self.scheduler.track(work)
        idle = self.scheduler.idle()
        self.assertNoResult(idle)
        work.callback(None)
        self.successResultOf(idle)
        self.successResultOf(self.scheduler.idle())

    def test_failed_work_is_logged_and_untracked(self):
        """Periodic work failing asynchronously is logged; idle still fires."""
        work = defer.Deferred()
        self.scheduler.at_interval(1, lambda: work, "w")
        self.scheduler.start()
        self.clock.advance(1)
        idle = self.scheduler.idle()
        work.errback(RuntimeError("late"))
        self.successResultOf(idle)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_cancels_periodic_timers(self):
        """After stop() no periodic tick runs."""
        self.scheduler.at_interval(1, lambda: self.calls.append(1), "t")
        self.scheduler.start()
        self.successResultOf(self.scheduler.stop())
        self.clock.advance(10)
        self.assertEqual(self.calls, [])

    def test_stop_cancels_one_shots(self):
        """After stop() no pending one-shot (a flapping restart, a retry) runs either."""
        self.scheduler.after(5, lambda: self.calls.append("after"), "a")
        self.scheduler.immediately(lambda: self.calls.append("now"), "n")
        self.successResultOf(self.scheduler.stop())
        self.clock.advance(10)
        self.assertEqual((self.calls, self.clock.getDelayedCalls()), ([], []))

    def test_nothing_is_scheduled_after_stop(self):
        """A one-shot asked for after stop() (a crash heard while the HM stops) is refused:
        no timer outlives the stop."""
        self.successResultOf(self.scheduler.stop())
        receipt = self.scheduler.after(5, lambda: self.calls.append("after"), "a")
        self.scheduler.immediately(lambda: self.calls.append("now"), "n")
        self.clock.advance(10)
        self.assertEqual((self.calls, self.clock.getDelayedCalls(), receipt.active()),
                         ([], [], False))
        receipt.cancel()

    def test_on_run_hears_durations(self):
        """on_run(name, seconds) hears each callback's name and run time on `eventual`."""
        runs = []
        scheduler = Scheduler(self.clock, on_run=lambda name, took: runs.append((name, took)))
        scheduler.after(1, lambda: self.clock.advance(0.25), "slow")
        self.clock.advance(1)
        self.assertEqual(runs, [("slow", 0.25)])

    def test_now_is_the_clock(self):
        """now() is the injected clock's time."""
        self.clock.advance(42)
        self.assertEqual(self.scheduler.now(), 42)
