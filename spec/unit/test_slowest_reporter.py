"""The `slowest` trial reporter used by `make test`."""

import io

from twisted.plugin import getPlugins
from twisted.trial.itrial import IReporter
from twisted.trial.unittest import SynchronousTestCase, TestSuite

from health_manager.testing.slowest import SlowestTestsReporter, dispatched_durations

# How long each sample test takes, in fake seconds.
DURATIONS = {"test_a": 1.0, "test_b": 3.0, "test_c": 2.0}


def sample_tests(names, clock):
    """Tests that advance `clock` by their DURATIONS; test_c fails. Built here, not at
    module level, so that trial does not collect them."""

    class Sample(SynchronousTestCase):
        def test_a(self):
            """Takes 1 s."""
            clock[0] += DURATIONS["test_a"]

        def test_b(self):
            """Takes 3 s."""
            clock[0] += DURATIONS["test_b"]

        def test_c(self):
            """Takes 2 s, then fails."""
            clock[0] += DURATIONS["test_c"]
            self.fail("boom")

    return [Sample(name) for name in names]


class SlowestReporterTests(SynchronousTestCase):
    def run_sample(self, names):
        stream = io.StringIO()
        clock = [0.0]
        reporter = SlowestTestsReporter(stream, clock=lambda: clock[0])
        TestSuite(sample_tests(names, clock)).run(reporter)
        reporter.done()
        return reporter, stream.getvalue()

    def test_lists_slowest_first_before_the_summary(self):
        """The slowest tests come longest first, and the output still ends with trial's
        summary line."""
        reporter, out = self.run_sample(["test_a", "test_b", "test_c"])
        self.assertEqual([name.rsplit(".", 1)[1] for _, name in reporter.slowest()],
                         ["test_b", "test_c", "test_a"])
        listing = out[out.index("Slowest 3 tests:"):]
        self.assertLess(listing.index("test_b"), listing.index("test_c"))
        self.assertLess(listing.index("test_c"), listing.index("test_a"))
        self.assertIn("    3.00 s  ", listing)
        self.assertEqual(out.rstrip("\n").splitlines()[-1], "FAILED (failures=1, successes=2)")

    def test_shows_at_most_ten(self):
        """Of more than ten tests, only the ten slowest are listed."""
        reporter, out = self.run_sample(["test_a"] * 8 + ["test_b"] * 4)
        self.assertEqual([seconds for seconds, _ in reporter.slowest()], [3.0] * 4 + [1.0] * 6)
        self.assertIn("Slowest 10 tests:", out)

    def test_plugin_is_found_by_trial(self):
        """`trial --reporter=slowest` names this reporter."""
        found = [p for p in getPlugins(IReporter) if p.longOpt == "slowest"]
        self.assertEqual([(p.module, p.klass) for p in found],
                         [("health_manager.testing.slowest", "SlowestTestsReporter")])


class DispatchedDurationsTests(SynchronousTestCase):
    def test_two_workers(self):
        """Under -j2, a test's time runs from the end of the result two before it (in
        name order) to its own end."""
        # Handed out in name order to whichever worker is free: a 0-5 and d 5-7 on one,
        # b 0-2, c 2-6 and e 6-9 on the other.
        ends = [(2, "b"), (5, "a"), (6, "c"), (7, "d"), (9, "e")]
        self.assertEqual(dispatched_durations(0, ends),
                         {"a": 5, "b": 2, "c": 4, "d": 2, "e": 3})

    def test_serial_order(self):
        """Tests that ended in name order one after another take the gaps between ends."""
        self.assertEqual(dispatched_durations(10, [(11, "a"), (14, "b")]), {"a": 1, "b": 3})

    def test_replayed_run_reports_inferred_times(self):
        """A reporter that saw every start replayed at its test's end (DistReporter) lists
        the inferred times instead."""
        stream = io.StringIO()
        clock = [0.0]
        reporter = SlowestTestsReporter(stream, clock=lambda: clock[0])
        for end, name in [(2, "test_b"), (5, "test_a"), (6, "test_c")]:
            clock[0] = end
            test = sample_tests([name], [0.0])[0]
            reporter.startTest(test)
            reporter.addSuccess(test)
            clock[0] += 0.01  # replaying takes a little time too
            reporter.stopTest(test)
        self.assertEqual([(round(seconds, 2), name.rsplit(".", 1)[1])
                          for seconds, name in reporter.slowest()],
                         [(5.01, "test_a"), (4.0, "test_c"), (2.01, "test_b")])
