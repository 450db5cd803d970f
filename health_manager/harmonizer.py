"""The Harmonizer: THE POLICY. What the health manager does, and when, in one place.

`prepare()` lists every periodic activity by interval name; the `on_*` hooks say how each
event is answered (PROTOCOL.md §5). Beyond HM 2.0 (DESIGN.md §6): stops always name
instances and count them in `running`; vanished instances are marked DOWN before the
missing check; missing starts wait for a fresh actual state; no analysis action and no
droplet GC while the desired state is stale.

Every start and stop is one the CC acts on (§3.1, §3.2), and together they converge: a
start counts held wanted indices in `running`, so duplicates and extras never block it; a
start is sent only for a wanted index no instance holds, and is checked again when it
leaves the queue; extras are chosen by index; a duplicate's stop names the same instance
every time; and a STARTED app's stops wait until every wanted index runs, so that the
`remaining` the CC computes is never below the desired count.
"""

import random

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from health_manager.constants import CRASHED, FLAPPING, HIGH, LOW, NORMAL, STAGED
from health_manager.durable import NothingDurable
from health_manager.metrics import RealtimeTotals
from health_manager.model.durable import CrashRecord
from health_manager.orders import StartOrder, StopOrder, StopTarget
from health_manager.policy_parameters import PolicyParameters

# The stop reason for every instance of an app the CC no longer describes (§5.8).
REASON_EXTRA_APP = "Extra app"
# 2**64 already dwarfs any max_restart_delay; bounding the exponent keeps the math cheap.
_MAX_BACKOFF_EXPONENT = 64


class _AnalysisPass:
    """One walk over a snapshot of the registry, a slice per reactor turn."""

    __slots__ = ("droplets", "position", "started", "totals", "done", "write_back")

    def __init__(self, droplets, started, write_back):
        self.droplets = droplets
        self.position = 0
        self.started = started
        self.write_back = write_back  # record every crash history on the way (HA journal)
        self.totals = RealtimeTotals()
        self.done: defer.Deferred[None] = defer.Deferred()


class Harmonizer:
    log = Logger()

    def __init__(self, config, scheduler, registry, nudger, desired_state, actual_freshness,
                 metrics, noise=random.uniform, durable=None, policy=None):
        self._intervals = config.intervals
        # Where the CC generations differ (contracts/*/policy.py); HM 2.0's by default.
        self._policy = policy if policy is not None else PolicyParameters()
        self._slice_size = config.number_of_droplets_analyzed_per_analysis_iteration
        self._scheduler = scheduler
        self._registry = registry
        self._nudger = nudger
        self._desired_state = desired_state
        self._actual_freshness = actual_freshness
        self._metrics = metrics
        self._noise = noise
        # Where crash histories and sent starts outlive this process (HA), or nowhere.
        self._durable = durable if durable is not None else NothingDurable()
        self._analysis = None  # the pass in progress, if any

    def prepare(self):
        """Register every periodic activity with the scheduler."""
        intervals = self._intervals
        scheduler = self._scheduler
        scheduler.immediately(self.update_desired_state, "desired_state_update")
        scheduler.at_interval(intervals.desired_state_update, self.update_desired_state,
                              "desired_state_update")
        scheduler.at_interval(intervals.request_queue, self._nudger.drain, "request_queue")
        scheduler.at_interval(intervals.droplets_analysis, self.analyze_droplets,
                              "droplets_analysis")
        scheduler.at_interval(intervals.droplet_gc, self.gc_droplets, "droplet_gc")

    def update_desired_state(self):
        return self._desired_state.refresh()

    # -- events from the actual state ----------------------------------------------------

    def on_heartbeat_news(self, droplet):
        """A second instance was heard on a held index (§5.3), or an instance first heard
        EVACUATING: start a replacement for the evacuation at once (as for a DEA exit, with
        HM9000's CC), and plan the droplet's stops now rather than at its next analysis.
        Stops wait for a fresh, settled desired state."""
        now = self._scheduler.now()
        evacuations = droplet.unanswered_evacuations()
        if evacuations and self._policy.replace_evacuating_instances:
            droplet_lost = self._intervals.droplet_lost
            for version, index in evacuations:
                self.log.info("instance evacuating: app_id={droplet} index={index}",
                              droplet=droplet.id, index=index)
                self.on_exit_dea(droplet, version, index,
                                 version == droplet.live_version
                                 and droplet.is_held(index, now, droplet_lost))
        if (droplet.desired_state_update_required or not self._desired_state.is_fresh()
                or droplet.is_extra(now, self._intervals.desired_state_lost)):
            return
        self._plan_stops(droplet, now)

    def on_exit_crashed(self, droplet, version, index, instance, held):
        """A crash (§5.4): a LOW restart at once, or the flapping policy, when the index is
        wanted and no other instance holds it. The slot's crash history is recorded."""
        self._durable.forget_start(droplet.id, version, index)
        if (self._needs_start(droplet, version, index, held, "crash")
                and not self._waits_for_index_zero(droplet, index, "crash")):
            if instance.state == FLAPPING:
                self._flapping_policy(droplet, version, index, instance, chatty=True)
            else:
                self._queue_start(droplet, index, LOW, "crashed")
                self._replacement_grace(droplet)
        self._durable.record_crash(self._crash_record(droplet, version, index, instance))

    def on_exit_dea(self, droplet, version, index, held, guid=None):
        """DEA shutdown or evacuation (§5.4): restart elsewhere at HIGH priority. An
        instance already heard EVACUATING was replaced then (DEAs from Dec 2013 to Jun 2016
        announced an evacuation both ways, HM9000.md §5.6): no second start."""
        if droplet.evacuating is not None and guid in droplet.evacuating:
            self.log.info("no start after DEA exit: replaced when heard evacuating: "
                          "app_id={droplet} index={index}", droplet=droplet.id, index=index)
            return
        self._durable.forget_start(droplet.id, version, index)
        self._replacement_grace(droplet)
        if self._needs_start(droplet, version, index, held, "DEA exit"):
            self._queue_start(droplet, index, HIGH, "DEA exit")

    def _replacement_grace(self, droplet):
        """Unlike HM 2.0 (§5.6 analysis): the replacement the leader starts after an exit
        gets droplet_lost seconds to heartbeat before the missing check may start the same
        index a second time. A standby starts nothing, so it grants none: promoted, it
        starts at once what is still missing, except what the old leader's recorded start
        intents say is already coming up (ha/journal.py)."""
        if self._nudger.is_acting():
            droplet.reset_missing_check(self._scheduler.now())

    def on_exit_stopped(self, droplet, index):
        droplet.reset_missing_check(self._scheduler.now())
        self.log.info("instance stopped: app_id={droplet} index={index}",
                      droplet=droplet.id, index=index)

    def on_droplet_updated(self, droplet):
        """The CC changed the app (§5.7): wait for its new desired state."""
        droplet.reset_missing_check(self._scheduler.now())
        droplet.mark_updated(self._scheduler.now())
        # Every pending flapping restart, not HM 2.0's off-by-one scan of the live version.
        droplet.cancel_pending_restarts()
        self._scheduler.track(self._desired_state.refresh())

    def _needs_start(self, droplet, version, index, held, event):
        """Whether an exit of (version, index) leaves a wanted index without an instance.

        HM 2.0 restarted every crashed or evacuated index (§5.4). Starting one that another
        instance still holds (a duplicate's crash) or one the CC no longer wants (at or above
        the desired count, a stopped app) would make a duplicate or an extra: the CC acts on
        the start, since it does not check the index (§3.1), and the stop that follows
        undoes it. An exit of another version than the live one starts nothing either: an
        old version was replaced (the live version's own slot is judged by the missing
        check), and a version the HM does not know yet means its desired state lags: a
        start of the version it knows would be refused (§3.1)."""
        if droplet.live_version is None:
            return True  # _queue_start says why it cannot start without desired state
        if version != droplet.live_version:
            reason = f"version {version} is not the live version"
        elif held:
            reason = "another instance holds the index"
        elif not self._startable(droplet, index):
            reason = "the index is not wanted"
        else:
            return True
        self.log.info("no start after {event}: {reason}: app_id={droplet} index={index}",
                      event=event, reason=reason, droplet=droplet.id, index=index)
        return False

    # -- analysis ------------------------------------------------------------------------

    def analyze_droplets(self):
        """Walk every droplet once, a slice per reactor turn; fires when the pass ends."""
        now = self._scheduler.now()
        analysis = self._analysis = _AnalysisPass(self._registry.snapshot(), now,
                                                  self._durable.write_back_due(now))
        self._analyze_slice(analysis)
        return analysis.done

    def stop(self):
        """End the pass in progress where it is: the scheduler's stop cancels its next
        slice, and the stop waits for every tracked pass to end."""
        analysis = self._analysis
        if analysis is not None and not analysis.done.called:
            self.log.info("analysis pass stopped after {done} of {total} droplets",
                          done=analysis.position, total=len(analysis.droplets))
            analysis.done.callback(None)

    def _analyze_slice(self, analysis):
        if analysis.done.called:
            return  # stopped
        try:
            now = self._scheduler.now()
            acting = self._desired_state.is_fresh()
            droplets = analysis.droplets
            end = min(analysis.position + self._slice_size, len(droplets))
            registered = self._registry.get
            analyze = self.analyze_droplet
            totals = analysis.totals
            write_back = analysis.write_back
            for position in range(analysis.position, end):
                droplet = droplets[position]
                if registered(droplet.id) is droplet:  # not removed mid-pass
                    analyze(droplet, now, acting, totals)
                    if write_back:
                        self._write_back(droplet, now)
            analysis.position = end
            if end < len(droplets):
                self._scheduler.immediately(lambda: self._analyze_slice(analysis),
                                            "droplets_analysis slice")
                return
            self._metrics.publish_realtime(analysis.totals, now - analysis.started)
        except Exception:
            analysis.done.errback(Failure())
        else:
            analysis.done.callback(None)

    def analyze_droplet(self, droplet, now, acting, totals):
        """One droplet's analysis (§5.9), then its realtime figures added to `totals` (§6.2);
        `acting` is False while desired state is stale."""
        intervals = self._intervals
        droplet_lost = intervals.droplet_lost
        if acting and not droplet.is_extra(now, intervals.desired_state_lost):
            # One walk marks vanished instances DOWN and, when due, finds missing ones; a
            # droplet with nothing to start or stop is finished by it.
            missing = droplet.sweep(now, droplet_lost,
                                    droplet.missing_check_due(now, droplet_lost),
                                    intervals.flapping_timeout, totals)
            if missing is None:
                return
            # An HA standby leaves the check due, so that on promotion it starts at once
            # what is still missing (its grace after a crash or exit is kept).
            if missing and self._nudger.is_acting():
                self.on_missing_instances(droplet, missing)
                droplet.reset_missing_check(now)
            if not droplet.desired_state_update_required:
                self._plan_stops(droplet, now)
        else:
            droplet.mark_vanished_down(now, droplet_lost)
            if acting:
                self.on_extra_app(droplet)
        droplet.prune_crashes(now, intervals.flapping_timeout)
        droplet.add_realtime(totals)

    def on_missing_instances(self, droplet, indices):
        """Start missing live-version indices (§5.6), once the actual state is trusted."""
        if not self._actual_freshness.is_fresh():
            self.log.info("actual state not fresh: missing instances ignored "
                          "app_id={droplet} indices={indices}", droplet=droplet.id,
                          indices=indices)
            return
        if droplet.desired_state_update_required:
            return
        now = self._scheduler.now()
        for index in indices:
            instance = droplet.instance(droplet.live_version, index, now)
            if ((instance.state == CRASHED or instance.state == FLAPPING)
                    and self._waits_for_index_zero(droplet, index, "missing check")):
                continue
            if instance.state == FLAPPING:
                self._flapping_policy(droplet, droplet.live_version, index, instance,
                                      chatty=False)
            else:
                self._queue_start(droplet, index, NORMAL, "missing")

    def _plan_stops(self, droplet, now):
        """Stop what should not run (§5.8), as far as the CC will act on it now."""
        stops, running, held_back = droplet.plan_stops(
            now, self._intervals.droplet_lost, self._policy.replace_evacuating_instances)
        if held_back:
            self._metrics.stops_deferred += held_back
            self.log.debug("{count} stops wait until every wanted index runs: "
                           "app_id={droplet}", count=held_back, droplet=droplet.id)
        if stops:
            reasons = sorted({reason for _, _, reason in stops.values()})
            self._stop(droplet, {guid: StopTarget(version, index, reason)
                                 for guid, (version, index, reason) in stops.items()},
                       running, ", ".join(reasons))

    def on_extra_app(self, droplet):
        """Stop every live instance of an app the CC no longer describes (§5.8)."""
        now = self._scheduler.now()
        droplet_lost = self._intervals.droplet_lost
        instances = droplet.live_instances(now, droplet_lost)
        if instances:
            self._stop(droplet, {guid: StopTarget(version, index, REASON_EXTRA_APP)
                                 for guid, (version, index) in instances.items()},
                       droplet.stop_running_counts(now, droplet_lost), REASON_EXTRA_APP)

    # -- garbage collection --------------------------------------------------------------

    def gc_droplets(self):
        """Forget droplets the CC stopped describing (§5.10), only on a fresh desired state."""
        if not self._desired_state.is_fresh():
            self.log.info("droplet GC skipped: desired state is not fresh")
            return
        now = self._scheduler.now()
        grace = self._intervals.droplet_gc_grace_period
        before = len(self._registry)
        for droplet in self._registry.snapshot():
            if droplet.ripe_for_gc(now, grace):
                droplet.cancel_pending_restarts()
                self._registry.remove(droplet.id)
        self.log.info("droplet GC removed {removed} of {before} droplets",
                      removed=before - len(self._registry), before=before)

    # -- flapping ------------------------------------------------------------------------

    def _flapping_policy(self, droplet, version, index, instance, chatty):
        """Restart a flapping instance after a doubling delay, or give up (§5.5)."""
        if instance.pending_restart is not None:
            return
        intervals = self._intervals
        if self._given_up(instance.crash_count):
            if chatty:
                self.log.info("given up on restarting: app_id={droplet} index={index} "
                              "crashes={crashes}", droplet=droplet.id, index=index,
                              crashes=instance.crash_count)
                self._metrics.flapping_restarts_given_up += 1
            return
        exponent = min(max(0, instance.crash_count - intervals.flapping_death - 1),
                       _MAX_BACKOFF_EXPONENT)
        delay = min(intervals.max_restart_delay, intervals.min_restart_delay * 2 ** exponent)
        noise = intervals.delay_time_noise
        delay = max(0, delay + self._noise(-noise, noise))
        self._schedule_flapping_restart(droplet, version, index, instance, delay)
        self._durable.record_crash(self._crash_record(droplet, version, index, instance))

    def _schedule_flapping_restart(self, droplet, version, index, instance, delay):
        instance.pending_restart = self._scheduler.after(
            delay, lambda: self._flapping_restart(droplet, version, index, instance),
            "flapping restart")

    def _flapping_restart(self, droplet, version, index, instance):
        instance.pending_restart = None
        if (self._registry.get(droplet.id) is not droplet
                or droplet.find_instance(version, index) is not instance):
            self.log.info("flapping restart dropped, instance forgotten: app_id={droplet} "
                          "index={index}", droplet=droplet.id, index=index)
            return
        if not self._startable(droplet, index) or droplet.is_held(index, self._scheduler.now(),
                                                       self._intervals.droplet_lost):
            # HM 2.0 sent it anyway (§5.14.7) and made a duplicate.
            self.log.info("flapping restart dropped, index no longer needs it: "
                          "app_id={droplet} index={index}", droplet=droplet.id, index=index)
            return
        if self._waits_for_index_zero(droplet, index, "flapping restart"):
            # The missing check schedules it again once the app runs.
            return
        self._durable.record_crash(self._crash_record(droplet, version, index, instance))
        if self._sent_by_previous_leader(droplet, index, "flapping restart"):
            return
        self.log.info("flapping restart: app_id={droplet} index={index}",
                      droplet=droplet.id, index=index)
        self._nudger.publish_start(StartOrder(droplet, droplet.live_version, index,
                                              flapping=True))
        # The replacement needs time to heartbeat before it can be judged missing again.
        droplet.reset_missing_check(self._scheduler.now())

    # -- messages ------------------------------------------------------------------------

    def _queue_start(self, droplet, index, priority, reason):
        if droplet.live_version is None:
            # The CC refuses a start without its app's version; once the desired state
            # arrives, the missing check starts this index if it is still down.
            self.log.info("start ({reason}) not sent, no desired state yet: app_id={droplet} "
                          "index={index}", reason=reason, droplet=droplet.id, index=index)
            return
        self.log.info("queue start ({reason}): app_id={droplet} index={index}",
                      reason=reason, droplet=droplet.id, index=index)
        self._nudger.queue_start(droplet.id, index, priority,
                                 lambda: self._start_when_due(droplet, index, reason))

    def _start_when_due(self, droplet, index, reason):
        """The payload of a queued start as it leaves the queue, or None when the index no
        longer needs it: the droplet was forgotten, the index is no longer wanted, or an
        instance holds it now."""
        now = self._scheduler.now()
        if (self._registry.get(droplet.id) is not droplet
                or not self._startable(droplet, index)
                or droplet.is_held(index, now, self._intervals.droplet_lost)):
            self.log.info("queued start ({reason}) no longer needed: app_id={droplet} "
                          "index={index}", reason=reason, droplet=droplet.id, index=index)
            return None
        instance = droplet.find_instance(droplet.live_version, index)
        if (instance is not None and (instance.state == CRASHED or instance.state == FLAPPING)
                and self._waits_for_index_zero(droplet, index, f"queued start ({reason})")):
            return None
        if self._sent_by_previous_leader(droplet, index, f"queued start ({reason})"):
            return None
        # Its replacement needs droplet_lost seconds to heartbeat before the index may be
        # judged missing again, however long the start waited in the queue.
        droplet.reset_missing_check(now)
        return StartOrder(droplet, droplet.live_version, index)

    def _startable(self, droplet, index):
        """Whether the CC wants `index` started and would act on a start of it now: with
        HM9000's CC only while the app is staged (a PENDING app, restaging, is refused;
        HM 2.0's CC started it on its previous droplet)."""
        return droplet.wants(index) and (
            not self._policy.start_only_staged_apps or droplet.package_state == STAGED)

    def _waits_for_index_zero(self, droplet, index, what):
        """HM9000's guard against restart storms of a broken app (HM9000.md §5.3): while the
        app has no STARTING or RUNNING instance at all, only its index 0 is restarted after
        a crash. The others are started by the missing check once the app runs."""
        if index == 0 or not self._policy.restart_only_index_zero_while_app_down:
            return False
        now = self._scheduler.now()
        droplet_lost = self._intervals.droplet_lost
        for record in (droplet.versions.get(droplet.live_version) or {}).values():
            if record.live_guids(now, droplet_lost):
                return False
        self.log.info("{what}: no restart while the app has no running instance (only "
                      "index 0 is restarted): app_id={droplet} index={index}", what=what,
                      droplet=droplet.id, index=index)
        return True

    def _sent_by_previous_leader(self, droplet, index, what):
        """Whether another leader's recorded start of this index may still come up (HA):
        sending it again would make a duplicate. Once the intent expires (droplet_lost
        after it was sent), the missing check starts the index if nothing came up."""
        now = self._scheduler.now()
        intent = self._durable.previous_start(droplet.id, droplet.live_version, index, now)
        if intent is None:
            return False
        self._metrics.ha_starts_skipped_for_intent += 1
        self.log.info("{what} not sent: the leader of epoch {epoch} sent one {age:.1f} s ago; "
                      "waiting for its instance: app_id={droplet} index={index}", what=what,
                      epoch=intent.epoch, age=now - intent.sent_at, droplet=droplet.id,
                      index=index)
        return True

    # -- durable state (HA) --------------------------------------------------------------

    def _given_up(self, crash_count):
        """No more restarts after giveup_crash_number crashes (§5.5; -1: never give up)."""
        giveup = self._intervals.giveup_crash_number
        return giveup > 0 and crash_count > giveup

    def _crash_record(self, droplet, version, index, instance):
        pending = instance.pending_restart
        return CrashRecord(
            app_id=droplet.id, version=version, index=index,
            crash_count=instance.crash_count, last_crash=instance.last_crash_timestamp,
            flapping=instance.crash_count > self._intervals.flapping_death,
            given_up=self._given_up(instance.crash_count),
            restart_due=pending.when() if pending is not None and pending.active() else None)

    def _write_back(self, droplet, now):
        """Record every crash history of `droplet` the HM still acts on: a recent crash, a
        pending restart or a give-up (which lasts until the slot crashes again after a quiet
        flapping_timeout, so its record is kept alive by these passes)."""
        flapping_timeout = self._intervals.flapping_timeout
        for version, instances in droplet.versions.items():
            for index, instance in instances.items():
                count = instance.crash_count
                if not count:
                    continue
                last = instance.last_crash_timestamp
                if (instance.pending_restart is not None or self._given_up(count)
                        or (last is not None and now - last <= flapping_timeout)):
                    self._durable.record_crash(
                        self._crash_record(droplet, version, index, instance))

    def restore_crash_records(self, records):
        """Merge crash records loaded at promotion (another HM's, or this one's before it
        restarted) into the model; returns how many were newer than what it knew. A pending
        restart they carry fires at its original due time (at once if that has passed)."""
        now = self._scheduler.now()
        intervals = self._intervals
        newer = 0
        for record in records:
            droplet = self._registry.get_or_create(record.app_id, now)
            instance = droplet.instance(record.version, record.index, now)
            if not instance.adopt_crash_record(record.crash_count, record.last_crash,
                                               intervals.flapping_timeout,
                                               intervals.flapping_death):
                continue
            newer += 1
            self._metrics.ha_records_restored += 1
            if (record.restart_due is not None and instance.state == FLAPPING
                    and droplet.live_version in (None, record.version)):
                instance.cancel_pending_restart()
                self._schedule_flapping_restart(droplet, record.version, record.index,
                                                instance, record.restart_due - now)
        return newer

    def _stop(self, droplet, instances, running, reason):
        self.log.info("stop ({reason}): app_id={droplet} instances={instances}",
                      reason=reason, droplet=droplet.id, instances=sorted(instances))
        self._nudger.publish_stop(StopOrder(droplet, instances, running), reason=reason)
