"""Sliced: long work answered over reactor turns, each bounded by steps and by time."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.slicing import Sliced


def counting(steps, done, clock=None, cost=0.0):
    """`steps` steps, each recorded in `done` (and taking `cost` seconds of `clock`)."""
    for step in range(steps):
        done.append(step)
        if clock is not None:
            clock.advance(cost)
        yield
    return f"{steps} steps"


class SlicedTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.done = []

    def test_answer_is_the_generators_return_value(self):
        """Work that fits in one turn answers at once, with the generator's return."""
        answer = Sliced(self.clock, counting(5, self.done), budget=1).run()
        self.assertEqual((self.successResultOf(answer), self.clock.getDelayedCalls()),
                         ("5 steps", []))

    def test_per_turn_bounds_each_turn(self):
        """At most `per_turn` steps a turn; the rest wait for the next turns."""
        turns_end_after = []
        call_later = self.clock.callLater
        self.patch(self.clock, "callLater", lambda delay, fn: (
            turns_end_after.append(len(self.done)) or call_later(delay, fn)))
        answer = Sliced(self.clock, counting(10, self.done), budget=60, per_turn=4).run()
        self.assertNoResult(answer)
        self.clock.advance(0)  # task.Clock runs every turn the slices schedule
        self.assertEqual((turns_end_after, self.successResultOf(answer)),
                         ([4, 8], "10 steps"))

    def test_budget_bounds_each_turn(self):
        """A turn ends at the first look at the clock after `budget` seconds; the clock
        is looked at every `check_every` steps."""
        steps = counting(20, self.done, self.clock, cost=0.001)
        answer = Sliced(self.clock, steps, budget=0.003, check_every=2).run()
        self.assertEqual(len(self.done), 4)  # 3 ms passed at step 3, seen at step 4
        while not answer.called:
            self.clock.advance(0)
        self.assertEqual(self.successResultOf(answer), "20 steps")

    def test_cancel_schedules_no_further_turn(self):
        """Cancelling the answer (the client went away) stops the work where it is."""
        answer = Sliced(self.clock, counting(10, self.done), budget=60, per_turn=3).run()
        answer.cancel()
        self.failureResultOf(answer)
        self.clock.advance(0)
        self.assertEqual((len(self.done), self.clock.getDelayedCalls()), (3, []))
