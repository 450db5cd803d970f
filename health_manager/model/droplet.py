"""One droplet (app): its desired state from the CC and its instance slots as heard."""

from typing import TYPE_CHECKING, Any, Protocol

from health_manager.constants import (
    CRASHED,
    DOWN,
    EVACUATING,
    FLAPPING,
    RUNNING,
    STAGED,
    STARTED,
    STARTING,
    STOPPED,
)
from health_manager.model.instance import AppInstance

if TYPE_CHECKING:
    from health_manager.model.desired_app import DesiredApp
    from health_manager.model.heartbeat import Heartbeat

REASON_STOPPED = "Droplet state is STOPPED"
REASON_EXTRA_INSTANCE = "Extra instance"
REASON_VERSION = "Live version mismatch"
REASON_DUPLICATE = "Instance mismatch"
REASON_EVACUATED = "Evacuation complete"

# guid -> (version, index, reason) of the instances to stop.
Stops = dict[str, tuple[str, int, str]]


class Totals(Protocol):
    """The analysis pass's sums (metrics.RealtimeTotals) that a droplet adds to."""

    total_apps: int
    total_instances: int
    crashed_instances: int
    started_apps: int
    started_crashes: int
    running_instances: int
    missing_instances: int
    flapping_instances: int
    started_running: int
    started_missing: int
    started_flapping: int


class Droplet:
    """Desired fields, {version -> {index -> AppInstance}} and the crash entries of one app.

    Every time-dependent method takes `now`; nothing here reads a clock or does I/O.
    """

    __slots__ = ("id", "num_instances", "state", "live_version", "package_state",
                 "last_updated", "memory", "desired_state_update_required",
                 "desired_state_update_timestamp", "reset_timestamp", "versions", "crashes",
                 "updated_at", "evacuating")

    id: str
    num_instances: int
    state: str | None
    live_version: str | None
    package_state: str | None
    last_updated: int | None
    memory: int | None
    desired_state_update_required: bool
    desired_state_update_timestamp: float
    reset_timestamp: float
    # live_version is None until the CC describes the app; nothing is ever stored under
    # None, so the lookups by live_version below (ignored for mypy) simply find nothing.
    versions: dict[str, dict[int, AppInstance]]
    crashes: dict[str, tuple[float, float | None]]
    updated_at: float | None
    # guid -> [version, index, last heard, answered] of instances heard EVACUATING.
    evacuating: dict[str, list[Any]] | None

    def __init__(self, droplet_id: str, now: float) -> None:
        self.id = droplet_id
        self.num_instances = 0
        self.state = None
        self.live_version = None
        self.package_state = None
        self.last_updated = None
        self.memory = None
        # A new droplet is stale until the bulk API describes it (§5.1).
        self.desired_state_update_required = True
        self.desired_state_update_timestamp = now
        self.reset_timestamp = now
        self.versions = {}
        self.crashes = {}  # guid -> (HM time last seen, crash timestamp)
        self.updated_at = None  # when droplet.updated last said the app changed
        # Rare (a DEA being evacuated), so None rather than an empty dict per droplet.
        self.evacuating = None

    # -- desired state -------------------------------------------------------------------

    def set_desired(self, app: "DesiredApp", now: float, asked_at: float) -> None:
        """The app as a bulk page requested at `asked_at` described it. A page asked for
        before the last droplet.updated describes the app as it was: the droplet stays
        stale until a later page (HM 2.0 cleared it, and acted on the old count)."""
        self.num_instances = app.instances
        self.state = app.state
        self.live_version = app.version
        self.package_state = app.package_state
        self.last_updated = app.updated_at
        self.memory = app.memory
        if self.updated_at is None or asked_at > self.updated_at:
            self.desired_state_update_required = False
        self.desired_state_update_timestamp = now

    def mark_updated(self, now: float) -> None:
        """droplet.updated (§5.7): the desired state is stale until a page asked for later."""
        self.updated_at = now
        self.desired_state_update_required = True

    def is_extra(self, now: float, desired_state_lost: float) -> bool:
        """Not described by the CC for `desired_state_lost` seconds (§5.8)."""
        return now - self.desired_state_update_timestamp > desired_state_lost

    def ripe_for_gc(self, now: float, grace_period: float) -> bool:
        return now - self.desired_state_update_timestamp > grace_period

    # -- instance slots ------------------------------------------------------------------

    def instance(self, version: str, index: int, now: float) -> AppInstance:
        """The slot for (version, index), created DOWN if new."""
        instances = self.versions.get(version)
        if instances is None:
            instances = self.versions[version] = {}
        record = instances.get(index)
        if record is None:
            record = instances[index] = AppInstance(now)
        return record

    def find_instance(self, version: str | None, index: int) -> AppInstance | None:
        instances = self.versions.get(version)  # type: ignore[arg-type]
        return None if instances is None else instances.get(index)

    def process_heartbeat(self, beat: "Heartbeat", now: float,
                          droplet_lost: float) -> str | None:
        """Apply one heartbeat entry (§5.3). Returns the guid of an instance the policy
        should hear about now: a duplicate heard for the first time (a second instance on an
        index that is held) or an instance first heard EVACUATING; else None."""
        # self.instance() inlined: this runs once per heartbeat entry.
        instances = self.versions.get(beat.version)
        if instances is None:
            instances = self.versions[beat.version] = {}
        record = instances.get(beat.index)
        if record is None:
            record = instances[beat.index] = AppInstance(now)
        state = beat.state
        if state == CRASHED:
            self.crashes[beat.instance] = (now, beat.state_timestamp)
        elif state == EVACUATING:
            # Its DEA_EVACUATION exit, if heard first, has already been answered.
            exited = record.exited is not None and beat.instance in record.exited
            record.receive_heartbeat(state, beat.instance, beat.state_timestamp, now,
                                     droplet_lost)
            return self._heard_evacuating(beat.instance, beat.version, beat.index, now,
                                          exited)
        return record.receive_heartbeat(state, beat.instance, beat.state_timestamp, now,
                                        droplet_lost)

    # -- evacuation (HM9000.md §5.6) -----------------------------------------------------

    def _heard_evacuating(self, guid: str, version: str, index: int, now: float,
                          answered: bool) -> str | None:
        """Remember an instance heard EVACUATING; its guid when heard so for the first
        time and not `answered` already. It no longer holds its index (the slot let it
        go), but it still runs."""
        evacuating = self.evacuating
        if evacuating is None:
            evacuating = self.evacuating = {}
        entry = evacuating.get(guid)
        if entry is None:
            evacuating[guid] = [version, index, now, answered]
            return None if answered else guid
        entry[2] = now
        return None

    def unanswered_evacuations(self) -> list[tuple[str, int]]:
        """[(version, index)] of instances heard EVACUATING that the policy has not
        answered yet; each is answered (reported) once."""
        found: list[tuple[str, int]] = []
        for entry in (self.evacuating or {}).values():
            if not entry[3]:
                entry[3] = True
                found.append((entry[0], entry[1]))
        return found

    def expire_evacuating(self, now: float, droplet_lost: float) -> None:
        """Forget evacuating instances not heard for `droplet_lost`: their DEA has left."""
        evacuating = self.evacuating
        if evacuating is None:
            return
        for guid in [g for g, entry in evacuating.items() if now - entry[2] > droplet_lost]:
            del evacuating[guid]
        if not evacuating:
            self.evacuating = None

    def _evacuated_stops(self, stops: Stops, now: float, droplet_lost: float) -> None:
        """Add the evacuating instances that may go now (HM9000.md §5.6): those the CC no
        longer wants, for the same reasons as any instance, and, on a wanted index, those
        whose replacement runs."""
        self.expire_evacuating(now, droplet_lost)
        live = self.live_version
        for guid, (version, index, _, _) in (self.evacuating or {}).items():
            if self.state == STOPPED:
                stops[guid] = (version, index, REASON_STOPPED)
            elif version != live:
                stops[guid] = (version, index, REASON_VERSION)
            elif index >= self.num_instances:
                stops[guid] = (version, index, REASON_EXTRA_INSTANCE)
            else:
                record = self.find_instance(version, index)
                if (record is not None and record.state == RUNNING
                        and record.live_guids(now, droplet_lost)):
                    stops[guid] = (version, index, REASON_EVACUATED)

    def process_exit(self, version: str, index: int, guid: str,
                     now: float) -> tuple[AppInstance, bool]:
        """The slot an exit names, with `guid` gone from it (§5.4), and whether another
        instance still holds that slot."""
        record = self.instance(version, index, now)
        held = record.mark_down_for_guid(guid, now)
        return record, held

    def process_exit_crash(self, record: AppInstance, guid: str, crash_timestamp: float,
                           flapping_timeout: float, flapping_death: int, now: float,
                           held: bool) -> None:
        """Count a crash on `record` and remember it as a crash entry (§5.4).

        Unlike HM 2.0, which keyed the entry by the slot's current guid (a previous
        instance's, or null, when the new one had not heartbeated yet), the entry is keyed by
        the instance that crashed."""
        record.crash(crash_timestamp, flapping_timeout, flapping_death, held)
        self.crashes[guid] = (now, crash_timestamp)

    def is_held(self, index: int, now: float, droplet_lost: float) -> bool:
        """True when a live instance of the live version holds `index`."""
        record = self.find_instance(self.live_version, index)
        return record is not None and bool(record.live_guids(now, droplet_lost))

    def wants(self, index: int) -> bool:
        """True when the CC wants `index` of the live version running."""
        return (self.state == STARTED and self.live_version is not None
                and 0 <= index < self.num_instances)

    def start_running_counts(self) -> dict[str, int]:
        """`running` for a health.start: version -> indices below the desired count held by
        a RUNNING instance.

        HM 2.0 summed the distinct recent guids of every RUNNING slot (§1.5), so a duplicate
        on one index or a running extra index made `running` reach the desired count while
        another index was missing: the CC refused that start (§3.1), and the duplicate's or
        extra's stop too (§3.2), for ever. Counting held wanted indices, a start is refused
        only when every wanted index runs, which is when no start is needed."""
        wanted = self.num_instances
        return {version: sum(1 for index, record in instances.items()
                             if index < wanted and record.state == RUNNING)
                for version, instances in self.versions.items()}

    def live_instances(self, now: float, droplet_lost: float) -> dict[str, tuple[str, int]]:
        """guid -> (version, index) of every live instance (duplicates included), across
        versions."""
        live: dict[str, tuple[str, int]] = {}
        for version, instances in self.versions.items():
            for index, record in instances.items():
                for guid in record.live_guids(now, droplet_lost):
                    live[guid] = (version, index)
        return live

    def stop_running_counts(self, now: float, droplet_lost: float) -> dict[str, int]:
        """`running` for a health.stop: version -> live instances, duplicates and the
        instances being stopped included, so the CC's `remaining` (§3.2) is what really
        remains (§5.14.1)."""
        counts: dict[str, int] = {}
        for version, instances in self.versions.items():
            counts[version] = sum(len(record.live_guids(now, droplet_lost))
                                  for record in instances.values())
        return counts

    def mark_vanished_down(self, now: float, droplet_lost: float) -> None:
        """STARTING/RUNNING slots without a recent heartbeat become DOWN (§5.8, §5.14.2);
        a slot with duplicates gives way to a live one instead."""
        if self.evacuating is not None:
            self.expire_evacuating(now, droplet_lost)
        # is_alive() inlined for a STARTING/RUNNING slot: this runs for every instance on
        # every analysis pass.
        for instances in self.versions.values():
            for record in instances.values():
                if record.duplicates is not None:
                    record.refresh(now, droplet_lost)
                state = record.state
                if state == RUNNING or state == STARTING:
                    seen = record.last_heartbeat_time
                    if seen is None or now - seen > droplet_lost:
                        record.mark_down(now)

    def plan_stops(self, now: float, droplet_lost: float,
                   stop_evacuated: bool = False) -> tuple[Stops, dict[str, int], int]:
        """(stops, running, held_back): the instances to stop now, as guid -> (version,
        index, reason), the `running` map to send with them, and how many other stops wait.
        Only stops the CC acts on are returned (§3.2). Dead slots that should not exist are
        removed (§5.8).

        - Unwanted: every instance of a STOPPED app, of an old version, or on an index at
          or above the desired count. HM 2.0 judged "extra" by the order slots were created
          in, and could stop a wanted index while keeping an extra one (§5.8, §5.13).
        - Duplicates: every instance on a wanted index but its primary (the stable choice,
          model/instance.py), once that primary is proven alive.
        - For a STARTED app, until every wanted index is held by a proven RUNNING primary,
          only the surplus above the desired count goes (`_within_floor`): the CC refuses a
          stop leaving fewer (remaining < desired), and stopping an old version would lower
          the app's capacity. So the missing starts come first, and the rest of the stops
          follow once the starts have come up.
        - An old-version stop needs a live-version instance running (§3.2).
        - With `stop_evacuated` (HM9000's CC), instances heard EVACUATING go too, once a
          replacement runs on their index (they hold no slot, so no floor applies).
        """
        live = self.live_version
        wanted = self.num_instances
        started = self.state == STARTED
        unwanted_app = self.state == STOPPED
        stops: Stops = {}
        counts: dict[str, int] = {}
        dead: list[tuple[str, int]] = []
        for version, instances in self.versions.items():
            total = 0
            for index, record in instances.items():
                guids = record.live_guids(now, droplet_lost)
                total += len(guids)
                if unwanted_app:
                    reason = REASON_STOPPED
                elif version != live:
                    reason = REASON_VERSION
                elif index >= wanted:
                    reason = REASON_EXTRA_INSTANCE
                else:
                    if len(guids) > 1 and record.is_proven(now, droplet_lost):
                        for guid in guids:
                            if guid != record.guid:
                                stops[guid] = (version, index, REASON_DUPLICATE)
                    continue
                if not guids:
                    dead.append((version, index))
                for guid in guids:
                    stops[guid] = (version, index, reason)
            counts[version] = total
        for version, index in dead:
            self.versions[version].pop(index).cancel_pending_restart()
        for version in [v for v, instances in self.versions.items()
                        if not instances and (unwanted_app or v != live)]:
            del self.versions[version]
        evacuated: Stops = {}
        if stop_evacuated and self.evacuating is not None:
            self._evacuated_stops(evacuated, now, droplet_lost)
        if not stops:
            return evacuated, counts, 0
        if started and not self._all_wanted_running(now, droplet_lost):
            # A STARTED app has a live version.
            allowed = self._within_floor(stops, counts.get(live, 0),  # type: ignore[arg-type]
                                         now, droplet_lost)
            held_back = len(stops) - len(allowed)
        elif counts.get(live, 0) <= 0:  # type: ignore[arg-type]
            allowed = {guid: entry for guid, entry in stops.items() if entry[0] == live}
            held_back = len(stops) - len(allowed)
        else:
            allowed, held_back = stops, 0
        allowed.update(evacuated)
        return allowed, counts, held_back

    def _within_floor(self, stops: Stops, live_count: int, now: float,
                      droplet_lost: float) -> Stops:
        """While a wanted index is not running: the live-version stops that keep at least
        the desired count of live instances (the CC's floor, §3.2), in guid order. Only
        once every held wanted index has a proven primary, so that no instance is stopped
        in favour of one that may be gone. This lets surplus instances go even when an
        index stays down for good (given up): the CC would refuse more, and old versions
        are kept, as capacity, until every wanted index runs."""
        instances = self.versions.get(self.live_version) or {}  # type: ignore[arg-type]
        for index in range(self.num_instances):
            record = instances.get(index)
            if (record is not None and record.live_guids(now, droplet_lost)
                    and not record.is_proven(now, droplet_lost)):
                return {}
        budget = live_count - self.num_instances
        live = self.live_version
        allowed = {}
        for guid in sorted(stops):
            if budget <= 0:
                break
            if stops[guid][0] == live:
                allowed[guid] = stops[guid]
                budget -= 1
        return allowed

    def _all_wanted_running(self, now: float, droplet_lost: float) -> bool:
        instances = self.versions.get(self.live_version) or {}  # type: ignore[arg-type]
        for index in range(self.num_instances):
            record = instances.get(index)
            if record is None or not record.is_proven(now, droplet_lost):
                return False
        return True

    # -- the analysis pass ---------------------------------------------------------------

    def sweep(self, now: float, droplet_lost: float, find_missing: bool,
              flapping_timeout: float, totals: Totals) -> list[int] | None:
        """The analysis pass's one walk over this droplet's slots (§5.6, §5.14.2, §6.2).

        Marks vanished slots DOWN, then, when `find_missing` (and the app is STARTED and
        STAGED), returns the live-version indices below `num_instances` that are missing;
        absent slots are created DOWN, as HM 2.0 does. A quiet droplet, for which that finds
        nothing missing and leaves nothing to stop (a STARTED app whose only slots are
        live-version indices below `num_instances`, none with a duplicate), is finished here:
        prune_crashes() and add_realtime() are applied as the analysis would after acting,
        and None is returned.

        One loop over the live version's first `num_instances` indices marks, creates,
        judges and counts each slot; the separate marking walk runs only when other slots
        exist. Marking first changes no verdict: a STARTING/RUNNING slot without a recent
        heartbeat is missing either way, and a created slot is DOWN like an absent one.
        """
        versions = self.versions
        live = self.live_version
        instances = versions.get(live)  # type: ignore[arg-type]
        missing: list[int] = []
        visited = running = down = flapping = 0
        crowded = False  # a slot with duplicates: there are stops to plan
        started = self.state == STARTED
        if started:
            find_missing = find_missing and self.package_state == STAGED
            for index in range(self.num_instances):
                record = None if instances is None else instances.get(index)
                if record is None:
                    down += 1
                    if find_missing:
                        # Created DOWN, as HM 2.0 does: the slot then exists for the start's
                        # bookkeeping and for the extra-instance walk. Never heard: missing.
                        if instances is None:
                            instances = versions[live] = {}  # type: ignore[index]
                        instances[index] = AppInstance(now)
                        missing.append(index)
                        visited += 1
                    continue
                visited += 1
                if record.duplicates is not None:
                    crowded = True
                    record.refresh(now, droplet_lost)
                # is_alive() and is_missing() inlined, with the marking of a live slot.
                state = record.state
                seen = record.last_heartbeat_time
                if seen is None or now - seen > droplet_lost:
                    if state == RUNNING or state == STARTING:
                        record.mark_down(now)
                        state = DOWN
                    if find_missing and record.pending_restart is None:
                        missing.append(index)
                elif state == CRASHED and find_missing and record.pending_restart is None:
                    missing.append(index)
                if state == RUNNING or state == STARTING:
                    running += 1
                elif state == DOWN:
                    down += 1
                elif state == FLAPPING:
                    flapping += 1
        if instances is None or visited != len(instances) or len(versions) != 1:
            self.mark_vanished_down(now, droplet_lost)  # the slots the loop did not visit
            return missing
        if missing or not started or crowded or self.evacuating is not None:
            return missing
        self.prune_crashes(now, flapping_timeout)
        # add_realtime()'s sums, inlined with the counts of the walk above: this runs for
        # every quiet droplet of every pass (a shared helper measured slower here).
        crashes = len(self.crashes)
        totals.total_apps += 1
        totals.total_instances += self.num_instances
        totals.crashed_instances += crashes
        totals.started_apps += 1
        totals.started_crashes += crashes
        totals.running_instances += running
        totals.missing_instances += down
        totals.flapping_instances += flapping
        totals.started_running += running
        totals.started_missing += down
        totals.started_flapping += flapping
        return None

    # -- missing instances ---------------------------------------------------------------

    def reset_missing_check(self, now: float) -> None:
        self.reset_timestamp = now

    def missing_check_due(self, now: float, droplet_lost: float) -> bool:
        return now - self.reset_timestamp >= droplet_lost

    # -- crashes and pending restarts ----------------------------------------------------

    def prune_crashes(self, now: float, flapping_timeout: float) -> None:
        crashes = self.crashes
        if not crashes:
            return
        for guid in [g for g, (seen, _) in crashes.items() if now - seen > flapping_timeout]:
            del crashes[guid]

    def cancel_pending_restarts(self) -> int:
        """Cancel every scheduled flapping restart of this droplet; returns how many."""
        cancelled = 0
        for instances in self.versions.values():
            for record in instances.values():
                cancelled += record.cancel_pending_restart()
        return cancelled

    # -- reports -------------------------------------------------------------------------

    def flapping_indices(self, version: str) -> list[tuple[int, float | None]]:
        """[(index, since)] of the slots of `version` that are FLAPPING (§1.7)."""
        instances = self.versions.get(version) or {}
        return [(index, record.state_timestamp) for index, record in sorted(instances.items())
                if record.state == FLAPPING]

    def healthy_count(self, version: str) -> int:
        """Indices below the desired count whose `version` slot is RUNNING (§1.8)."""
        instances = self.versions.get(version)
        if not instances:
            return 0
        return sum(1 for index in range(self.num_instances)
                   if (record := instances.get(index)) is not None and record.state == RUNNING)

    def add_realtime(self, totals: Totals) -> None:
        """Add this droplet to the analysis pass totals (§6.2)."""
        crashes = len(self.crashes)
        totals.total_apps += 1
        totals.total_instances += self.num_instances
        totals.crashed_instances += crashes
        if self.state != STARTED:
            return
        totals.started_apps += 1
        totals.started_crashes += crashes
        instances = self.versions.get(self.live_version) or {}  # type: ignore[arg-type]
        running = missing = flapping = 0
        for index in range(self.num_instances):
            record = instances.get(index)
            state = DOWN if record is None else record.state
            if state == RUNNING or state == STARTING:
                running += 1
            elif state == DOWN:
                missing += 1
            elif state == FLAPPING:
                flapping += 1
        totals.running_instances += running
        totals.missing_instances += missing
        totals.flapping_instances += flapping
        totals.started_running += running
        totals.started_missing += missing
        totals.started_flapping += flapping

    def to_view(self) -> dict[str, Any]:
        """A clean JSON-ready view for `healthmanager.droplet` (§1.9)."""
        return {
            "id": self.id,
            "num_instances": self.num_instances,
            "state": self.state,
            "live_version": self.live_version,
            "package_state": self.package_state,
            "last_updated": self.last_updated,
            "memory": self.memory,
            "desired_state_update_required": self.desired_state_update_required,
            "desired_state_update_timestamp": self.desired_state_update_timestamp,
            "reset_timestamp": self.reset_timestamp,
            "crashes": [{"instance": guid, "seen": seen, "crash_timestamp": crashed}
                        for guid, (seen, crashed) in self.crashes.items()],
            "versions": {version: [record.to_view(index)
                                   for index, record in instances.items()]
                         for version, instances in self.versions.items()},
        }
