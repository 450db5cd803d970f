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
    heal_time: float | None = None  # seconds from the end of the chaos to HEALED
    status_url: str = ""  # the health manager's status page
    # What the health manager's starts and stops are called in the contract spoken.
    start_subject: str = "health.start"
    stop_subject: str = "health.stop"
    # (accepted, refused, failed) HTTPS heartbeats of the DEAs sending them; None: no DEA does.
    https_heartbeats: tuple[int, int, int] | None = None


LEGEND = (
    "  crashed kept: crashed instances a DEA still reports (dea_ng keeps the latest crash\n"
    "                of each app for an hour); they are not running and need no action.\n"
    "  extra:        RUNNING instances beyond one per desired index (duplicates, indices\n"
    "                above the desired count, old versions) that the HM should stop.\n"
    "  refused:      requests the Cloud Controller did not act on (PROTOCOL.md §3,\n"
    "                HM9000.md §1.4); a few come from apps that changed while the HM's\n"
    "                desired state lagged.")


def plural(count, noun, plural_form=None):
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


class View:
    """Draws Snapshot + Progress to `out`: redrawn in place on a tty, else a line each
    `plain_period` seconds of simulated time."""

    def __init__(self, out, tty, plain_period=2.0):
        self._out = out
        self.tty = tty
        self._plain_period = plain_period
        self._last_plain = None
        # (time, heartbeats) within RATE_WINDOW
        self._history: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, snapshot, progress):
        rate = self._heartbeat_rate(snapshot)
        if self.tty:
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
        f"  faults     {plural(p.injected_crashes, 'crash', 'crashes')} and "
        f"{plural(p.injected_kills, 'silent kill')} injected, "
        f"{plural(p.evacuations, 'DEA evacuation')}; "
        f"{plural(s.crashes, 'crash', 'crashes')} in all",
        f"  HM sent    {p.hm_starts_sent} {p.start_subject}, "
        f"{p.hm_stops_sent} {p.stop_subject}"
        f"  ({p.hm_given_up} flapping restarts given up)",
        f"  CC         starts {s.starts_accepted} accepted / {s.starts_refused} refused, "
        f"stops {s.stops_accepted} accepted / {s.stops_refused} refused",
        f"  errors     {p.errors} logged",
        f"  status     {p.status_url}  (the health manager's status page)",
        "",
        LEGEND,
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


def _https_line(p):
    if p.https_heartbeats is None:
        return []
    accepted, refused, failed = p.https_heartbeats
    return [f"  HTTPS heartbeats: {accepted} accepted (202), {refused} refused, "
            f"{failed} failed"]


def render_summary(s, p):
    if p.phase == "interrupted":
        verdict = "INTERRUPTED before the faults ended: not judged"
    elif s.healthy:
        verdict = "HEALED: every desired instance is running"
    else:
        verdict = (f"NOT HEALED: {plural(s.missing, 'desired instance')} still missing")
    heal = ("" if p.heal_time is None else
            f"  time to heal: {p.heal_time:.1f} s after the faults stopped\n")
    return "\n".join([
        "",
        f"Summary after {p.elapsed:.1f} s" + (" (interrupted)" if p.phase == "interrupted"
                                              else ""),
        f"  desired instances (flapping apps excluded): {s.desired}",
        f"  running: {s.running}   missing: {s.missing}   starting: {s.starting}   "
        f"crashed kept: {s.crashed}   extra: {s.extra}",
        f"  apps: {s.apps}, of which flapping: {s.flapping_apps} "
        f"(HM gave up {p.hm_given_up} restarts)",
        f"  faults injected: {plural(p.injected_crashes, 'crash', 'crashes')}, "
        f"{plural(p.injected_kills, 'silent kill')}, "
        f"{plural(p.evacuations, 'DEA evacuation')}; crashes in all: {s.crashes}",
        f"  health manager sent: {p.hm_starts_sent} {p.start_subject}, "
        f"{p.hm_stops_sent} {p.stop_subject}",
        f"  cloud controller: starts {s.starts_accepted} accepted, {s.starts_refused} refused; "
        f"stops {s.stops_accepted} accepted, {s.stops_refused} refused",
        *_https_line(p),
        f"  errors logged: {p.errors}",
        LEGEND,
        heal + verdict,
    ])
