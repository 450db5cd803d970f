"""One droplet (app): its desired state from the CC and its instance slots as heard."""

from health_manager.constants import (
    CRASHED, DOWN, FLAPPING, RUNNING, STAGED, STARTED, STARTING, STOPPED,
)
from health_manager.model.instance import AppInstance

REASON_STOPPED = "Droplet state is STOPPED"
REASON_EXTRA_INSTANCE = "Extra instance"
REASON_VERSION = "Live version mismatch"


class Droplet:
    """Desired fields, {version -> {index -> AppInstance}} and the crash entries of one app.

    Every time-dependent method takes `now`; nothing here reads a clock or does I/O.
    """

    __slots__ = ("id", "num_instances", "state", "live_version", "package_state",
                 "last_updated", "memory", "desired_state_update_required",
                 "desired_state_update_timestamp", "reset_timestamp", "versions", "crashes")

    def __init__(self, droplet_id, now):
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

    # -- desired state -------------------------------------------------------------------

    def set_desired(self, app, now):
        self.num_instances = app.instances
        self.state = app.state
        self.live_version = app.version
        self.package_state = app.package_state
        self.last_updated = app.updated_at
        self.memory = app.memory
        self.desired_state_update_required = False
        self.desired_state_update_timestamp = now

    def is_extra(self, now, desired_state_lost):
        """Not described by the CC for `desired_state_lost` seconds (§5.8)."""
        return now - self.desired_state_update_timestamp > desired_state_lost

    def ripe_for_gc(self, now, grace_period):
        return now - self.desired_state_update_timestamp > grace_period

    # -- instance slots ------------------------------------------------------------------

    def instance(self, version, index, now):
        """The slot for (version, index), created DOWN if new."""
        instances = self.versions.get(version)
        if instances is None:
            instances = self.versions[version] = {}
        record = instances.get(index)
        if record is None:
            record = instances[index] = AppInstance(now)
        return record

    def find_instance(self, version, index):
        instances = self.versions.get(version)
        return None if instances is None else instances.get(index)

    def process_heartbeat(self, beat, now):
        """Apply one heartbeat entry (§5.3). Returns a duplicate guid to stop, or None."""
        # self.instance() inlined: this runs once per heartbeat entry.
        instances = self.versions.get(beat.version)
        if instances is None:
            instances = self.versions[beat.version] = {}
        record = instances.get(beat.index)
        if record is None:
            record = instances[beat.index] = AppInstance(now)
        if beat.state == CRASHED:
            self.crashes[beat.instance] = (now, beat.state_timestamp)
        return record.receive_heartbeat(beat.state, beat.instance, beat.state_timestamp, now)

    def process_exit(self, version, index, guid, now):
        """The slot an exit names, marked DOWN if `guid` is its current instance (§5.4)."""
        record = self.instance(version, index, now)
        record.mark_down_for_guid(guid, now)
        return record

    def process_exit_crash(self, record, guid, crash_timestamp, flapping_timeout,
                           flapping_death, now):
        """Count a crash on `record` and remember it as a crash entry (§5.4).

        As in HM 2.0 the entry is keyed by the slot's current guid; a slot that never saw a
        heartbeat falls back to the exiting guid instead of a null key.
        """
        record.crash(crash_timestamp, flapping_timeout, flapping_death)
        key = record.guid if record.guid is not None else guid
        self.crashes[key] = (now, crash_timestamp)

    def running_counts(self):
        """version -> running guids, for every version known (§1.5)."""
        return {version: sum(record.running_guid_count() for record in instances.values())
                for version, instances in self.versions.items()}

    def live_instances(self):
        """guid -> version of every STARTING/RUNNING slot, across versions."""
        live = {}
        for version, instances in self.versions.items():
            for record in instances.values():
                if record.starting_or_running and record.guid is not None:
                    live[record.guid] = version
        return live

    def mark_vanished_down(self, now, droplet_lost):
        """STARTING/RUNNING slots without a recent heartbeat become DOWN (§5.8, §5.14.2)."""
        # is_alive() inlined for a STARTING/RUNNING slot: this runs for every instance on
        # every analysis pass.
        for instances in self.versions.values():
            for record in instances.values():
                state = record.state
                if state == RUNNING or state == STARTING:
                    seen = record.last_heartbeat_time
                    if seen is None or now - seen > droplet_lost:
                        record.mark_down(now)

    def may_have_extra_instances(self):
        """False when prune_extra_instances() certainly finds nothing to remove: a started
        app whose only version is the live one, with no more slots than desired."""
        versions = self.versions
        if not versions:
            return False
        if self.state == STOPPED or len(versions) != 1:
            return True
        instances = versions.get(self.live_version)
        return instances is None or len(instances) > self.num_instances

    def prune_extra_instances(self):
        """Remove slots that should not exist (§5.8): guid -> (version, reason) to stop.

        Walks versions and slots in insertion order, counting kept slots whatever their
        state; empty non-live (or STOPPED) version tables are dropped.
        """
        stops = {}
        kept = 0
        stopped = self.state == STOPPED
        for version, instances in self.versions.items():
            removed = []
            for index, record in instances.items():
                if stopped:
                    reason = REASON_STOPPED
                elif kept >= self.num_instances:
                    reason = REASON_EXTRA_INSTANCE
                elif version != self.live_version:
                    reason = REASON_VERSION
                else:
                    kept += 1
                    continue
                removed.append(index)
                if record.starting_or_running and record.guid is not None:
                    stops[record.guid] = (version, reason)
            for index in removed:
                instances.pop(index).cancel_pending_restart()
        for version in [v for v, instances in self.versions.items()
                        if not instances and (stopped or v != self.live_version)]:
            del self.versions[version]
        return stops

    # -- the analysis pass ---------------------------------------------------------------

    def sweep(self, now, droplet_lost, find_missing, flapping_timeout, totals):
        """The analysis pass's one walk over this droplet's slots (§5.6, §5.14.2, §6.2).

        Marks vanished slots DOWN, then, when `find_missing` (and the app is STARTED and
        STAGED), returns the live-version indices below `num_instances` that are missing;
        absent slots are created DOWN, as HM 2.0 does. A quiet droplet, for which that finds
        nothing missing and leaves nothing to prune (a STARTED app whose only slots are
        live-version indices below `num_instances`), is finished here instead:
        prune_crashes() and add_realtime() are applied as the analysis would after acting,
        and None is returned.

        One loop over the live version's first `num_instances` indices marks, creates,
        judges and counts each slot; the separate marking walk runs only when other slots
        exist. Marking first changes no verdict: a STARTING/RUNNING slot without a recent
        heartbeat is missing either way, and a created slot is DOWN like an absent one.
        """
        versions = self.versions
        live = self.live_version
        instances = versions.get(live)
        missing = []
        visited = running = down = flapping = 0
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
                            instances = versions[live] = {}
                        instances[index] = AppInstance(now)
                        missing.append(index)
                        visited += 1
                    continue
                visited += 1
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
        if missing or not started:
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

    def reset_missing_check(self, now):
        self.reset_timestamp = now

    def missing_check_due(self, now, droplet_lost):
        return now - self.reset_timestamp >= droplet_lost

    # -- crashes and pending restarts ----------------------------------------------------

    def prune_crashes(self, now, flapping_timeout):
        crashes = self.crashes
        if not crashes:
            return
        for guid in [g for g, (seen, _) in crashes.items() if now - seen > flapping_timeout]:
            del crashes[guid]

    def cancel_pending_restarts(self):
        """Cancel every scheduled flapping restart of this droplet; returns how many."""
        cancelled = 0
        for instances in self.versions.values():
            for record in instances.values():
                cancelled += record.cancel_pending_restart()
        return cancelled

    # -- reports -------------------------------------------------------------------------

    def flapping_indices(self, version):
        """[(index, since)] of the slots of `version` that are FLAPPING (§1.7)."""
        instances = self.versions.get(version) or {}
        return [(index, record.state_timestamp) for index, record in sorted(instances.items())
                if record.state == FLAPPING]

    def healthy_count(self, version):
        """Indices below the desired count whose `version` slot is RUNNING (§1.8)."""
        instances = self.versions.get(version)
        if not instances:
            return 0
        return sum(1 for index in range(self.num_instances)
                   if (record := instances.get(index)) is not None and record.state == RUNNING)

    def add_realtime(self, totals):
        """Add this droplet to the analysis pass totals (§6.2)."""
        crashes = len(self.crashes)
        totals.total_apps += 1
        totals.total_instances += self.num_instances
        totals.crashed_instances += crashes
        if self.state != STARTED:
            return
        totals.started_apps += 1
        totals.started_crashes += crashes
        instances = self.versions.get(self.live_version) or {}
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

    def to_view(self):
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
