"""HeartbeatLedger: the latest heartbeat of each DEA, as HM9000 kept its actual state, for
the app-state API's `instance_heartbeats`.

The policy's slot model (model/droplet.py) keeps one primary per (version, index) and has
no room for what HM9000's Cloud Controller reads: every instance a DEA lists, CRASHED and
EVACUATING ones included, with the DEA that runs it. HM9000 stored, per DEA, the instances
of its latest heartbeat (HM9000.md §3.3): an instance is gone as soon as its DEA stops
listing it, and all of a DEA's instances are gone once the DEA has been silent for the
presence TTL (here `droplet_lost`). This ledger keeps exactly that.

Ingest is the hot path, so `on_heartbeat` only files the message's entry list under its DEA
(one dict store per message, no per-entry work). There is no index by droplet: a query
scans the present DEAs' entries for the droplets it wants (`collect`), about 40 ns an
entry, whatever the number of apps asked for. Keeping an index up to date costs ~0.5 µs an
entry, at ingest or, deferred, at the next query; since a CC asks now and then while every
DEA reports every 10 s, nearly every query would pay it for all entries.

Memory: a kept entry would otherwise hold its own freshly decoded strings (~440 B an
instance in steady state, beside the model's ~520 B: over the 1 KiB budget). So a list
equal to the one the DEA sent before (the usual case: a DEA's instances rarely change
between two heartbeats) is not kept; the one already held stays, for one list comparison
(~0.2 µs an entry). A changed list is kept after its entries are pointed at strings held
elsewhere: the registry's droplet id, the droplet's desired version, its slot's instance
guid, the state constants (`share_strings`, ~0.8 µs an entry, only then). An entry then
costs ~120 B (bench/RESULTS.md). None of this is on HM 2.0's path: the ledger exists only
with cc_protocol: hm9000.
"""

import sys
from collections.abc import Collection, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from health_manager.constants import CRASHED, EVACUATING, RUNNING, STARTING
from health_manager.metrics import Hm9000Counters
from health_manager.model.heartbeat import Heartbeat
from health_manager.model.registry import DropletRegistry

# The states HM9000's DEAs list (dea_ng `send_heartbeat`) and the App JSON carries.
LISTED_STATES = frozenset((STARTING, RUNNING, CRASHED, EVACUATING))

# (dea, the entries of its latest heartbeat, None for one skipped at ingest)
Report = tuple[str, Sequence[Heartbeat | None]]
# droplet -> [(dea, entry)]
Listed = dict[str, list[tuple[str, Heartbeat]]]

# Each state a DEA may send, as the one string object the constants module holds.
_STATE_CONSTANTS = {state: state for state in LISTED_STATES}


def share_strings(beats: Sequence[Heartbeat | None], registry: DropletRegistry) -> None:
    """Point each entry's strings at equal ones already held, so that the entry keeps no
    string of its own: the droplet's id in `registry`, its desired version, the guid its
    slot holds (the model took all from the entries it applied, or from the desired
    state), a state constant; others (a droplet the model no longer has, a duplicate's
    guid, the partition) are interned, shared at least across the ledger's entries."""
    get_droplet = registry.get
    states = _STATE_CONSTANTS
    intern = sys.intern
    for beat in beats:
        if beat is None:
            continue
        state = beat.state
        beat.state = states.get(state) or intern(state)
        if beat.cc_partition is not None:
            beat.cc_partition = intern(beat.cc_partition)
        droplet = get_droplet(beat.droplet)
        if droplet is None:
            beat.droplet = intern(beat.droplet)
            beat.version = intern(beat.version)
            continue
        beat.droplet = droplet.id
        version = beat.version
        slots = droplet.versions.get(version)
        beat.version = (droplet.live_version if version == droplet.live_version
                        else intern(version))
        record = None if slots is None else slots.get(beat.index)
        guid = None if record is None else record.guid
        if guid is not None and guid == beat.instance:
            beat.instance = guid


def collect(reports: Sequence[Report], wanted: Collection[str], into: Listed) -> None:
    """Add to `into` every listed entry of the `wanted` droplets in `reports`, with its
    DEA, in report order."""
    states = LISTED_STATES  # a local: this loop runs once per instance of the foundation
    for dea, beats in reports:
        # One comprehension per DEA: most entries are not wanted, and this is the loop.
        hits = [beat for beat in beats if beat is not None and beat.droplet in wanted
                and beat.state in states]
        for beat in hits:
            listed = into.get(beat.droplet)
            if listed is None:
                into[beat.droplet] = [(dea, beat)]
            else:
                listed.append((dea, beat))


class HeartbeatLedger:
    """dea id -> (heard at, entries of its latest heartbeat). `clock` is the Scheduler's
    clock (fake time in black-box mode); `ttl` is how long a silent DEA's instances still
    count (`droplet_lost`); `registry` is the policy's model, whose strings the entries
    kept share (share_strings)."""

    log = Logger()

    def __init__(self, clock: IReactorTime, ttl: float, counters: Hm9000Counters,
                 registry: DropletRegistry) -> None:
        self._clock = clock
        self._ttl = ttl
        self._counters = counters
        self._registry = registry
        self._latest: dict[str, tuple[float, Sequence[Heartbeat | None]]] = {}
        self._pruned_at = clock.seconds()

    def on_heartbeat(self, dea: str | None, beats: Sequence[Heartbeat | None]) -> None:
        """ActualState's heartbeat observer: `dea` sent `beats`, its complete list, already
        applied to the model (a changed list's entries are changed by share_strings)."""
        if dea is None:
            self._counters.heartbeats_without_dea += 1
            if self._counters.heartbeats_without_dea == 1:
                self.log.warn("a dea.heartbeat without a 'dea' id: its instances are not "
                              "listed by the app-state API (further ones are only counted)")
            return
        now = self._clock.seconds()
        held = self._latest.get(dea)
        if held is not None and held[1] == beats:
            beats = held[1]  # the same list again: keep the entries already compacted
        else:
            share_strings(beats, self._registry)
        self._latest[dea] = (now, beats)
        if now - self._pruned_at > self._ttl:
            self._prune(now)

    def present(self) -> list[Report]:
        """(dea, entries) of the latest heartbeat of every DEA heard within the TTL."""
        now = self._clock.seconds()
        ttl = self._ttl
        return [(dea, beats) for dea, (heard, beats) in self._latest.items()
                if now - heard <= ttl]

    def __len__(self) -> int:
        """DEAs whose latest heartbeat is held (present, or silent and not yet pruned)."""
        return len(self._latest)

    def _prune(self, now: float) -> None:
        """Forget the DEAs silent for longer than the TTL: their instances no longer count,
        and a DEA that went away for good must not be kept for ever."""
        self._pruned_at = now
        ttl = self._ttl
        for dea in [dea for dea, (heard, _) in self._latest.items() if now - heard > ttl]:
            del self._latest[dea]
