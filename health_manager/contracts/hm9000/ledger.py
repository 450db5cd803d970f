"""HeartbeatLedger: the latest heartbeat of each DEA, as HM9000 kept its actual state, for
the app-state API's `instance_heartbeats`.

The policy's slot model (model/droplet.py) keeps one primary per (version, index) and has
no room for what HM9000's Cloud Controller reads: every instance a DEA lists, CRASHED and
EVACUATING ones included, with the DEA that runs it. HM9000 stored, per DEA, the instances
of its latest heartbeat (HM9000.md §3.3): an instance is gone as soon as its DEA stops
listing it, and all of a DEA's instances are gone once the DEA has been silent for the
presence TTL (here `droplet_lost`). This ledger keeps exactly that.

Ingest is the hot path, so `on_heartbeat` only files the message's entry list under its DEA
(a dict store per message, no per-entry work). The droplet index that the queries need is
brought up to date when a query comes: each DEA heard since the last query is regrouped
once, however many heartbeats it sent meanwhile.
"""

from collections.abc import Iterator, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from health_manager.constants import CRASHED, EVACUATING, RUNNING, STARTING
from health_manager.metrics import Hm9000Counters
from health_manager.model.heartbeat import Heartbeat

# The states HM9000's DEAs list (dea_ng `send_heartbeat`) and the App JSON carries.
LISTED_STATES = frozenset((STARTING, RUNNING, CRASHED, EVACUATING))


class HeartbeatLedger:
    """dea id -> (heard at, entries of its latest heartbeat), with a droplet index built on
    demand. `clock` is the Scheduler's clock (fake time in black-box mode); `ttl` is how long
    a silent DEA's instances still count (`droplet_lost`)."""

    log = Logger()

    def __init__(self, clock: IReactorTime, ttl: float, counters: Hm9000Counters) -> None:
        self._clock = clock
        self._ttl = ttl
        self._counters = counters
        # dea -> (heard at, the entries of its latest heartbeat, None for a skipped one)
        self._latest: dict[str, tuple[float, Sequence[Heartbeat | None]]] = {}
        # DEAs whose latest heartbeat is not in the index yet (a dict as an ordered set)
        self._unindexed: dict[str, None] = {}
        # droplet -> dea -> that DEA's listed entries of the droplet, all versions
        self._by_droplet: dict[str, dict[str, list[Heartbeat]]] = {}
        # dea -> the droplets it has entries under in _by_droplet
        self._indexed: dict[str, list[str]] = {}
        self._pruned_at = clock.seconds()

    def on_heartbeat(self, dea: str | None, beats: Sequence[Heartbeat | None]) -> None:
        """ActualState's heartbeat observer: `dea` sent `beats`, its complete list."""
        if dea is None:
            self._counters.heartbeats_without_dea += 1
            if self._counters.heartbeats_without_dea == 1:
                self.log.warn("a dea.heartbeat without a 'dea' id: its instances are not "
                              "listed by the app-state API (further ones are only counted)")
            return
        now = self._clock.seconds()
        self._latest[dea] = (now, beats)
        self._unindexed[dea] = None
        if now - self._pruned_at > self._ttl:
            self._prune(now)

    def entries(self, droplet: str, version: str) -> Iterator[tuple[str, Heartbeat]]:
        """(dea, entry) for every listed instance of (droplet, version) whose DEA is
        present, in the order the DEAs were indexed and the entries were sent."""
        self._catch_up()
        by_dea = self._by_droplet.get(droplet)
        if not by_dea:
            return
        now = self._clock.seconds()
        latest = self._latest
        ttl = self._ttl
        for dea, beats in by_dea.items():
            if now - latest[dea][0] > ttl:
                continue
            for beat in beats:
                if beat.version == version:
                    yield dea, beat

    def __len__(self) -> int:
        """DEAs whose latest heartbeat is held (present or not yet pruned)."""
        return len(self._latest)

    def _catch_up(self) -> None:
        if not self._unindexed:
            return
        by_droplet = self._by_droplet
        for dea in self._unindexed:
            self._unindex(dea)
            groups: dict[str, list[Heartbeat]] = {}
            for beat in self._latest[dea][1]:
                if beat is None or beat.state not in LISTED_STATES:
                    continue
                group = groups.get(beat.droplet)
                if group is None:
                    groups[beat.droplet] = [beat]
                else:
                    group.append(beat)
            for droplet, group in groups.items():
                by_dea = by_droplet.get(droplet)
                if by_dea is None:
                    by_dea = by_droplet[droplet] = {}
                by_dea[dea] = group
            self._indexed[dea] = list(groups)
        self._unindexed.clear()

    def _unindex(self, dea: str) -> None:
        by_droplet = self._by_droplet
        for droplet in self._indexed.pop(dea, ()):
            by_dea = by_droplet[droplet]
            del by_dea[dea]
            if not by_dea:
                del by_droplet[droplet]

    def _prune(self, now: float) -> None:
        """Forget the DEAs silent for longer than the TTL: their instances no longer count,
        and a DEA that went away for good must not be kept for ever."""
        self._pruned_at = now
        ttl = self._ttl
        for dea in [dea for dea, (heard, _) in self._latest.items() if now - heard > ttl]:
            del self._latest[dea]
            self._unindexed.pop(dea, None)
            self._unindex(dea)
