"""Work that answers a request over several reactor turns, so that a big question (100k
apps listed, a bulk app-state query) never blocks heartbeat ingest.

The work is a generator: each `next()` is one small step, and its return value is the
answer. A turn runs steps until `budget` seconds have passed (the clock looked at every
`check_every` steps, as it costs more than a cheap step) or `per_turn` steps ran, then
the rest waits for the next turn.
"""

from collections.abc import Generator
from typing import Generic, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

Answer = TypeVar("Answer")


class Sliced(Generic[Answer]):
    """`run()` fires with the generator's return value; `cancel()` (or cancelling that
    Deferred: the client went away) schedules no further turn."""

    def __init__(self, reactor: IReactorTime, steps: Generator[None, None, Answer],
                 budget: float, per_turn: int | None = None, check_every: int = 1) -> None:
        self._reactor = reactor
        self._steps = steps
        self._budget = budget
        self._per_turn = per_turn
        self._check_every = check_every
        self._cancelled = False
        self._call: IDelayedCall | None = None
        self.done: defer.Deferred[Answer] = defer.Deferred(lambda _: self.cancel())

    def run(self) -> "defer.Deferred[Answer]":
        self._turn()
        return self.done

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _turn(self) -> None:
        self._call = None
        if self._cancelled:
            return
        seconds = self._reactor.seconds
        began = seconds()
        steps, budget = self._steps, self._budget
        per_turn, check_every = self._per_turn, self._check_every
        taken = 0
        try:
            while True:
                next(steps)
                taken += 1
                if taken == per_turn or (taken % check_every == 0
                                         and seconds() - began >= budget):
                    break
        except StopIteration as end:
            self.done.callback(end.value)
            return
        self._call = self._reactor.callLater(0, self._turn)
