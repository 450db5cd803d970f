"""`trial --reporter=slowest`: trial's tree output, with the slowest tests listed before
the summary, so the output still ends with trial's summary line.

Under `trial -j N` the parent process times each test from the worker's start to its
stop, so the figures include the worker round trip (milliseconds).
"""

import time

from twisted.trial.reporter import TreeReporter

SHOWN = 10


class SlowestTestsReporter(TreeReporter):
    def __init__(self, *args, clock=time.perf_counter, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._started = {}
        self.durations = []

    def startTest(self, test):
        super().startTest(test)
        self._started[test.id()] = self._clock()

    def stopTest(self, test):
        super().stopTest(test)
        began = self._started.pop(test.id(), None)
        if began is not None:
            self.durations.append((self._clock() - began, test.id()))

    def slowest(self, count=SHOWN):
        """The `count` longest (seconds, test id), longest first."""
        return sorted(self.durations, key=lambda d: d[0], reverse=True)[:count]

    def done(self):
        slowest = self.slowest()
        if slowest:
            self._write("\nSlowest %d tests:\n", len(slowest))
            for seconds, name in slowest:
                self._write("%8.2f s  %s\n", seconds, name)
        super().done()
