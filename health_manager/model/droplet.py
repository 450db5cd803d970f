"""One droplet (app): its desired state from the CC and its instance slots as heard."""

from health_manager.constants import (
    CRASHED, DOWN, FLAPPING, RUNNING, STAGED, STARTED, STARTING, STOPPED,
)
from health_manager.model.instance import AppInstance

REASON_STOPPED = "Droplet state is STOPPED"
REASON_EXTRA_INSTANCE = "Extra instance"
REASON_VERSION = "Live version mismatch"
REASON_DUPLICATE = "Instance mismatch"


class Droplet:
    """Desired fields, {version -> {index -> AppInstance}} and the crash entries of one app.

    Every time-dependent method takes `now`; nothing here reads a clock or does I/O.
    """

    __slots__ = ("id", "num_instances", "state", "live_version", "package_state",
                 "last_updated", "memory", "desired_state_update_required",
                 "desired_state_update_timestamp", "reset_timestamp", "versions", "crashes",
                 "updated_at")

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
        self.updated_at = None  # when droplet.updated last said the app changed

    # -- desired state -------------------------------------------------------------------

    def set_desired(self, app, now, asked_at):
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

    def mark_updated(self, now):
        """droplet.updated (§5.7): the desired state is stale until a page asked for later."""
        self.updated_at = now
        self.desired_state_update_required = True

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

    def process_heartbeat(self, beat, now, droplet_lost):
        """Apply one heartbeat entry (§5.3). Returns the guid of a duplicate heard for the
        first time (a second instance on an index that is held), else None."""
        # self.instance() inlined: this runs once per heartbeat entry.
        instances = self.versions.get(beat.version)
        if instances is None:
            instances = self.versions[beat.version] = {}
        record = instances.get(beat.index)
        if record is None:
            record = instances[beat.index] = AppInstance(now)
        if beat.state == CRASHED:
            self.crashes[beat.instance] = (now, beat.state_timestamp)
        return record.receive_heartbeat(beat.state, beat.instance, beat.state_timestamp, now,
                                        droplet_lost)

    def process_exit(self, version, index, guid, now):
        """The slot an exit names, with `guid` gone from it (§5.4), and whether another
        instance still holds that slot."""
        record = self.instance(version, index, now)
        held = record.mark_down_for_guid(guid, now)
        return record, held

    def process_exit_crash(self, record, guid, crash_timestamp, flapping_timeout,
                           flapping_death, now, held):
        """Count a crash on `record` and remember it as a crash entry (§5.4).

        Unlike HM 2.0, which keyed the entry by the slot's current guid (a previous
        instance's, or null, when the new one had not heartbeated yet), the entry is keyed by
        the instance that crashed."""
        record.crash(crash_timestamp, flapping_timeout, flapping_death, held)
        self.crashes[guid] = (now, crash_timestamp)

    def is_held(self, index, now, droplet_lost):
        """True when a live instance of the live version holds `index`."""
        record = self.find_instance(self.live_version, index)
        return record is not None and bool(record.live_guids(now, droplet_lost))

    def wants(self, index):
        """True when the CC wants `index` of the live version running."""
        return (self.state == STARTED and self.live_version is not None
                and 0 <= index < self.num_instances)

    def start_running_counts(self):
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

    def live_instances(self, now, droplet_lost):
        """guid -> version of every live instance (duplicates included), across versions."""
        live = {}
        for version, instances in self.versions.items():
            for record in instances.values():
                for guid in record.live_guids(now, droplet_lost):
                    live[guid] = version
        return live

    def stop_running_counts(self, now, droplet_lost):
        """`running` for a health.stop: version -> live instances, duplicates and the
        instances being stopped included, so the CC's `remaining` (§3.2) is what really
        remains (§5.14.1)."""
        counts = {}
        for version, instances in self.versions.items():
            counts[version] = sum(len(record.live_guids(now, droplet_lost))
                                  for record in instances.values())
        return counts

    def mark_vanished_down(self, now, droplet_lost):
        """STARTING/RUNNING slots without a recent heartbeat become DOWN (§5.8, §5.14.2);
        a slot with duplicates gives way to a live one instead."""
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

    def plan_stops(self, now, droplet_lost):
        """(stops, running, held_back): the instances to stop now, as guid -> (version,
        reason), the `running` map to send with them, and how many other stops wait. Only
        stops the CC acts on are returned (§3.2). Dead slots that should not exist are
        removed (§5.8).

        - Unwanted: every instance of a STOPPED app, of an old version, or on an index at
          or above the desired count. HM 2.0 judged "extra" by the order slots were created
          in, and could stop a wanted index while keeping an extra one (§5.8, §5.13).
        - Duplicates: every instance on a wanted index but its primary (the stable choice,
          model/instance.py), once that primary is proven alive.
        - For a STARTED app nothing is stopped until every wanted index is held by a
          proven RUNNING primary: before that the CC refuses a live-version stop (remaining <
          desired), and stopping an old version would lower the app's capacity. The missing
          starts come first; the stops follow once the starts have come up.
        - An old-version stop needs a live-version instance running (§3.2).
        """
        live = self.live_version
        wanted = self.num_instances
        started = self.state == STARTED
        unwanted_app = self.state == STOPPED
        stops = {}
        counts = {}
        dead = []
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
                                stops[guid] = (version, REASON_DUPLICATE)
                    continue
                if not guids:
                    dead.append((version, index))
                for guid in guids:
                    stops[guid] = (version, reason)
            counts[version] = total
        for version, index in dead:
            self.versions[version].pop(index).cancel_pending_restart()
        for version in [v for v, instances in self.versions.items()
                        if not instances and (unwanted_app or v != live)]:
            del self.versions[version]
        if not stops:
            return stops, counts, 0
        if started and not self._all_wanted_running(now, droplet_lost):
            return {}, counts, len(stops)
        if counts.get(live, 0) <= 0:
            allowed = {guid: entry for guid, entry in stops.items() if entry[0] == live}
            return allowed, counts, len(stops) - len(allowed)
        return stops, counts, 0

    def _all_wanted_running(self, now, droplet_lost):
        instances = self.versions.get(self.live_version) or {}
        for index in range(self.num_instances):
            record = instances.get(index)
            if record is None or not record.is_proven(now, droplet_lost):
                return False
        return True

    # -- the analysis pass ---------------------------------------------------------------

    def sweep(self, now, droplet_lost, find_missing, flapping_timeout, totals):
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
        instances = versions.get(live)
        missing = []
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
                            instances = versions[live] = {}
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
        if missing or not started or crowded:
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
