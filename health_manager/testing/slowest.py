"""`trial --reporter=slowest`: trial's tree output, with the slowest tests listed before
the summary, so the output still ends with trial's summary line.

Run alone, a test's time is from its startTest to its stopTest. Under `trial -j N` the
reporter sees neither start: trial's DistReporter replays each test's events only when it
has ended. The ends are real, though, and trial hands the tests out in name order (its
order for one package or module, as in `trial -j2 spec.unit`) to whichever worker is free.
So a test started when the result N places before it in name order came in (the first N
at the run's start): that is the time shown, which includes the worker importing the
test's module when it is the first of it there. N is the smallest worker count for which
each test started on another test's result, before its own.
"""

import time

from twisted.trial.reporter import TreeReporter

SHOWN = 10
# Run alone, nearly all of a run's time is inside tests; replayed, nearly none of it is.
REPLAYED_SHARE = 0.5
MAX_JOBS = 64


def dispatched_durations(began, ends):
    """{test id: seconds} for tests run by N workers from `began`, given `ends`
    [(end time, test id)] in the order they ended; None when no N up to MAX_JOBS fits."""
    order = sorted(test_id for _, test_id in ends)
    position = {test_id: i for i, (_, test_id) in enumerate(ends)}
    for jobs in range(1, MAX_JOBS + 1):
        # The k-th test started when result k - jobs came in, which must be another
        # test's, before its own.
        if all(k < jobs or position[test_id] > k - jobs for k, test_id in enumerate(order)):
            return {test_id: ends[position[test_id]][0]
                    - (began if k < jobs else ends[k - jobs][0])
                    for k, test_id in enumerate(order)}
    return None


class SlowestTestsReporter(TreeReporter):
    def __init__(self, *args, clock=time.perf_counter, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._began = clock()
        self._started = {}
        self.durations = []  # (seconds from startTest to stopTest, test id)
        self.ends = []  # (end time, test id), in the order tests ended

    def startTest(self, test):
        super().startTest(test)
        self._started[test.id()] = self._clock()

    def stopTest(self, test):
        super().stopTest(test)
        now = self._clock()
        began = self._started.pop(test.id(), now)
        self.durations.append((now - began, test.id()))
        self.ends.append((now, test.id()))

    def slowest(self, count=SHOWN):
        """The `count` longest (seconds, test id), longest first."""
        durations = self.durations
        elapsed = self.ends[-1][0] - self._began if self.ends else 0
        if durations and sum(d for d, _ in durations) < REPLAYED_SHARE * elapsed:
            inferred = dispatched_durations(self._began, self.ends)
            if inferred is None:
                return []  # run in an order not known here (several names given to trial)
            durations = [(seconds, test_id) for test_id, seconds in inferred.items()]
        return sorted(durations, key=lambda d: d[0], reverse=True)[:count]

    def done(self):
        slowest = self.slowest()
        if self.durations and not slowest:
            self._write("\nSlowest tests: not known (run in parallel, in an unknown order)\n")
        if slowest:
            self._write("\nSlowest %d tests:\n", len(slowest))
            for seconds, name in slowest:
                self._write("%8.2f s  %s\n", seconds, name)
        super().done()
