"""The `slowest` trial reporter used by `make test`."""

import io

from twisted.plugin import getPlugins
from twisted.trial.itrial import IReporter
from twisted.trial.unittest import SynchronousTestCase, TestSuite

from health_manager.testing.slowest import SlowestTestsReporter

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
