"""The Scheduler: every timer of the health manager, over one injected IReactorTime.

Periodic work never dies (each tick catches and logs), never overlaps (a tick whose
Deferred is still running is skipped), and is tracked so that black-box mode can wait
until all work caused by a clock step has finished (`idle()`).
"""

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

# Pending one-shot calls kept before the first sweep of those already run or cancelled.
PENDING_SWEEP = 1024


class Receipt:
    """A cancellable handle on one delayed call (None: a call refused after stop())."""

    __slots__ = ("_call",)

    def __init__(self, call):
        self._call = call

    def cancel(self):
        if self._call is not None and self._call.active():
            self._call.cancel()

    def active(self):
        return self._call is not None and self._call.active()

    def when(self):
        """The clock time the call is due at (only meaningful while active)."""
        return self._call.getTime()


class Scheduler:
    log = Logger()

    def __init__(self, clock, eventual=None, on_run=None):
        """`clock` provides "now" and every timer; `eventual` (default: the clock) runs
        `immediately` work, so black-box mode can run it without advancing fake time.
        `on_run(name, seconds)` hears how long each callback ran, timed on `eventual` (the
        real reactor even in black-box mode)."""
        self._clock = clock
        self._eventual = eventual if eventual is not None else clock
        self._on_run = on_run
        self._periodic = []  # [name, period, fn, DelayedCall | None, running Deferred | None]
        self._pending = set()  # one-shot DelayedCalls not yet run: cancelled by stop()
        self._sweep_at = PENDING_SWEEP
        self._in_flight = set()
        self._idle_waiters = []
        self._running = False
        self._stopped = False

    def now(self):
        return self._clock.seconds()

    def at_interval(self, period, fn, name):
        """Run `fn` every `period` seconds, first one period after start()."""
        entry = [name, period, fn, None, None]
        self._periodic.append(entry)
        if self._running:
            self._arm(entry)

    def after(self, delay, fn, name):
        """Run `fn` once, `delay` seconds from now. Returns a Receipt."""
        return self._once(self._clock, max(0, delay), fn, name)

    def immediately(self, fn, name):
        """Run `fn` on the next reactor turn. Returns a Receipt."""
        return self._once(self._eventual, 0, fn, name)

    def _once(self, clock, delay, fn, name):
        if self._stopped:
            # A message still arriving while the HM stops (a crash, say) must not leave a
            # timer behind it: stop() promised that nothing scheduled runs any more.
            self.log.debug("{name} not scheduled: stopped", name=name)
            return Receipt(None)
        holder: list[IDelayedCall] = []
        call = clock.callLater(delay, self._run_once, fn, name, holder)
        holder.append(call)
        self._pending.add(call)
        # Forget run and cancelled calls now and then, so a long run does not pile them up:
        # when the set has doubled since the last sweep, so that thousands of pending
        # flapping restarts cost O(1) each, not a sweep per call.
        if len(self._pending) > self._sweep_at:
            self._pending = {c for c in self._pending if c.active()}
            self._sweep_at = max(PENDING_SWEEP, 2 * len(self._pending))
        return Receipt(call)

    def start(self):
        self._running = True
        for entry in self._periodic:
            self._arm(entry)

    def stop(self):
        """Cancel every timer, periodic or one-shot (flapping restarts, retries). Returns
        a Deferred firing once in-flight work ends."""
        self._running = False
        self._stopped = True
        for entry in self._periodic:
            if entry[3] is not None and entry[3].active():
                entry[3].cancel()
            entry[3] = None
        pending, self._pending = self._pending, set()
        for call in pending:
            if call.active():
                call.cancel()
        return self.idle()

    def track(self, result):
        """Count `result` (a Deferred, or anything else) as work in flight until it fires."""
        if not isinstance(result, defer.Deferred):
            return result
        self._in_flight.add(result)

        def done(outcome):
            self._in_flight.discard(result)
            if not self._in_flight:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    waiter.callback(None)
            return outcome

        result.addBoth(done)
        return result

    def idle(self):
        """A Deferred that fires once no tracked work is in flight."""
        if not self._in_flight:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _arm(self, entry):
        entry[3] = self._clock.callLater(entry[1], self._tick, entry)

    def _tick(self, entry):
        name, _period, fn, _call, running = entry
        if self._running:
            self._arm(entry)
        if running is not None:
            self.log.debug("{name} still running, tick skipped", name=name)
            return
        result = self._call(fn, name)
        if isinstance(result, defer.Deferred):
            entry[4] = result

            def finished(outcome):
                entry[4] = None
                return outcome

            result.addBoth(finished)

    def _run_once(self, fn, name, holder):
        self._pending.discard(holder[0])
        self._call(fn, name)

    def _call(self, fn, name):
        began = self._eventual.seconds()
        try:
            result = fn()
        except Exception:
            self.log.failure("{name} failed", name=name)
            return None
        finally:
            if self._on_run is not None:
                self._on_run(name, self._eventual.seconds() - began)
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda f: self.log.failure("{name} failed", f, name=name))
            return self.track(result)
        return None
