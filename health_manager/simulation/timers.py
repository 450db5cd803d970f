"""SimulationTimers: the periodic work of a simulation run (fault injection, the view),
each tick's failure logged, all stopped together at shutdown."""

from twisted.internet import task
from twisted.logger import Logger


class SimulationTimers:
    log = Logger()

    def __init__(self, reactor):
        self._reactor = reactor
        self._loops = []

    def every(self, period, fn, now):
        """Call `fn` every `period` seconds (first at once when `now`)."""
        loop = task.LoopingCall(fn)
        loop.clock = self._reactor
        loop.start(period, now=now).addErrback(
            lambda f: self.log.failure("simulation timer failed", f))
        self._loops.append(loop)

    def stop(self):
        for loop in self._loops:
            if loop.running:
                loop.stop()
