"""What a person sees while `health_manager simulate` runs: a live panel redrawn with ANSI
escapes on a terminal, one plain line per period otherwise, and the final summary."""

import collections

import attrs

CLEAR = "\x1b[H\x1b[2J"
# Heartbeats are counted over this many seconds: DEAs beat once a period, so a shorter
# window would flicker between 0 and twice the rate.
RATE_WINDOW = 3.0


@attrs.frozen
class Progress:
    """The run's own counters, next to the foundation's Snapshot."""

    elapsed: float
    duration: float
    phase: str  # "starting", "chaos", "settling" or "interrupted"
    injected_crashes: int = 0
    injected_kills: int = 0
    evacuations: int = 0
    hm_starts_sent: int = 0
    hm_stops_sent: int = 0
    hm_given_up: int = 0
    errors: int = 0


class View:
    """Draws Snapshot + Progress to `out`: redrawn in place on a tty, else a line each
    `plain_period` seconds of simulated time."""

    def __init__(self, out, tty, plain_period=2.0):
        self._out = out
        self._tty = tty
        self._plain_period = plain_period
        self._last_plain = None
        self._history = collections.deque()  # (time, heartbeats) within RATE_WINDOW

    def update(self, snapshot, progress):
        rate = self._heartbeat_rate(snapshot)
        if self._tty:
            self._out.write(CLEAR + render_panel(snapshot, progress, rate) + "\n")
            self._out.flush()
        elif self._last_plain is None or snapshot.at - self._last_plain >= self._plain_period:
            self._last_plain = snapshot.at
            self._out.write(render_line(snapshot, progress, rate) + "\n")
            self._out.flush()

    def _heartbeat_rate(self, snapshot):
        history = self._history
        history.append((snapshot.at, snapshot.heartbeats_sent))
        while len(history) > 2 and snapshot.at - history[1][0] >= RATE_WINDOW:
            history.popleft()
        first_at, first_count = history[0]
        if snapshot.at <= first_at:
            return 0.0
        return (snapshot.heartbeats_sent - first_count) / (snapshot.at - first_at)

    def summary(self, snapshot, progress):
        self._out.write(render_summary(snapshot, progress) + "\n")
        self._out.flush()


def _bar(done, total, width=30):
    if total <= 0:
        return "[" + " " * width + "]"
    filled = round(width * min(done, total) / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_panel(s, p, rate):
    state = "HEALTHY" if s.healthy else f"{s.missing} MISSING"
    return "\n".join([
        f"health_manager simulate    t={p.elapsed:5.1f}s / {p.duration:.0f}s    phase: {p.phase}",
        "",
        f"  instances  {_bar(s.running, s.desired)} {s.running}/{s.desired} running  ({state})",
        f"  apps       {s.apps} ({s.flapping_apps} flapping, excluded from the count)",
        f"  now        {s.starting} starting, {s.crashed} crashed kept, {s.extra} extra",
        f"  DEAs       {s.deas_active} active, {rate:.1f} heartbeats/s",
        "",
        f"  faults     {p.injected_crashes} crashes and {p.injected_kills} silent kills "
        f"injected, {p.evacuations} DEA evacuated; {s.crashes} crashes in all",
        f"  HM sent    {p.hm_starts_sent} health.start, {p.hm_stops_sent} health.stop"
        f"  ({p.hm_given_up} flapping restarts given up)",
        f"  CC         starts {s.starts_accepted} accepted / {s.starts_refused} refused, "
        f"stops {s.stops_accepted} accepted / {s.stops_refused} refused",
        f"  errors     {p.errors} logged",
        "",
        "  Ctrl-C stops everything.",
    ])


def render_line(s, p, rate):
    return (f"t={p.elapsed:.0f}s {p.phase}: running {s.running}/{s.desired} "
            f"missing {s.missing} starting {s.starting} crashed {s.crashed} extra {s.extra} | "
            f"crashes {s.crashes} | HM start {p.hm_starts_sent} stop {p.hm_stops_sent} | "
            f"CC start ok {s.starts_accepted} refused {s.starts_refused} "
            f"stop ok {s.stops_accepted} refused {s.stops_refused} | "
            f"deas {s.deas_active} hb/s {rate:.1f}")


def render_summary(s, p):
    verdict = ("HEALED: every desired instance is running" if s.healthy else
               f"NOT HEALED: {s.missing} desired instances still missing")
    return "\n".join([
        "",
        f"Summary after {p.elapsed:.1f} s" + (" (interrupted)" if p.phase == "interrupted"
                                              else ""),
        f"  desired instances (flapping apps excluded): {s.desired}",
        f"  running: {s.running}   missing: {s.missing}   starting: {s.starting}   "
        f"crashed kept: {s.crashed}   extra: {s.extra}",
        f"  apps: {s.apps}, of which flapping: {s.flapping_apps} "
        f"(HM gave up {p.hm_given_up} restarts)",
        f"  faults injected: {p.injected_crashes} crashes, {p.injected_kills} silent kills, "
        f"{p.evacuations} DEA evacuations; crashes in all: {s.crashes}",
        f"  health manager sent: {p.hm_starts_sent} health.start, "
        f"{p.hm_stops_sent} health.stop",
        f"  cloud controller: starts {s.starts_accepted} accepted, {s.starts_refused} refused; "
        f"stops {s.stops_accepted} accepted, {s.stops_refused} refused",
        f"  errors logged: {p.errors}",
        verdict,
    ])
