"""HM9000's ten gauges (HM9000.md §6), computed from the registry for /varz and /metrics.

HM9000 computed them from its store after every analysis (`analyzer/app_metrics.go@f627d75`;
before 2016-01 `metricsserver/metrics_server.go@7c34303^` at each /varz read, same
definitions), -1 each while the store was not fresh. Its "app" is a (guid, version) pair
that is desired or heartbeating; here it is a droplet's version. For each:

- desired (the CC's STARTED, STAGED-or-PENDING entry for that version): PENDING counts
  only in NumberOfDesiredAppsPendingStaging; a STAGED one counts in NumberOfDesiredApps,
  adds its instances to NumberOfDesiredInstances and its desired indices that nothing
  reports to NumberOfMissingIndices; it is one of NumberOfAppsWithAllInstancesReporting or
  NumberOfAppsWithMissingInstances.
- not desired: one of NumberOfUndesiredRunningApps when a STARTING/RUNNING instance runs.
- every app, desired or not, every index: NumberOfRunningInstances (STARTING + RUNNING,
  duplicates and extra indices included), NumberOfCrashedIndices (an index whose last
  instance crashed and that no STARTING/RUNNING instance holds).
- NumberOfCrashedInstances: the crashed instances of the droplet still heard (a DEA lists
  a crashed instance in its heartbeats until it reaps it), across versions.

Where this differs from HM9000 (for the issue's closing note):
- an index "reports" while a live instance holds it or its slot is CRASHED/FLAPPING;
  HM9000 counted any heartbeat, so an index whose crashed instance its DEA has reaped was
  "missing" there and is not here, and an EVACUATING-only index reported there;
- "desired" is what the policy acts on: described by the CC within `desired_state_lost`
  (HM9000: listed by the last complete fetch);
- crashed instances are those heard (CRASHED heartbeat or crash exit) within
  `droplet_lost`, per droplet, not per version;
- the values are at most `droplets_analysis` (20 s) old; HM9000's were from the last
  analysis (60 s cycle from 2016-04) or, before 2016-01, computed at each /varz read.

The walk runs every `intervals.droplets_analysis` seconds, a slice of droplets per reactor
turn like the analysis pass, so reading the gauges costs nothing. A pass counts only when
both states were fresh when it began and ended; the gauges read unknown (None: -1 in
/varz, NaN in /metrics) until such a pass completed and whenever a state is not fresh now.
"""

from twisted.internet import defer
from twisted.logger import Logger

from health_manager.constants import CRASHED, FLAPPING, PENDING, STAGED, STARTED
from health_manager.metrics import ContractGauge

# (HM9000's name, our /metrics name without the health_manager_ prefix, help), in
# HM9000's order.
GAUGES = (
    ("NumberOfAppsWithAllInstancesReporting", "hm9000_number_of_apps_with_all_instances_"
     "reporting", "Desired staged apps whose every desired index reports (HM9000)."),
    ("NumberOfAppsWithMissingInstances", "hm9000_number_of_apps_with_missing_instances",
     "Desired staged apps with a desired index nothing reports (HM9000)."),
    ("NumberOfUndesiredRunningApps", "hm9000_number_of_undesired_running_apps",
     "App versions not desired with a STARTING or RUNNING instance (HM9000)."),
    ("NumberOfRunningInstances", "hm9000_number_of_running_instances",
     "STARTING and RUNNING instances, of every app and index (HM9000)."),
    ("NumberOfMissingIndices", "hm9000_number_of_missing_indices",
     "Desired indices of desired staged apps that nothing reports (HM9000)."),
    ("NumberOfCrashedInstances", "hm9000_number_of_crashed_instances",
     "Crashed instances still heard (HM9000)."),
    ("NumberOfCrashedIndices", "hm9000_number_of_crashed_indices",
     "Indices whose instance crashed and that no STARTING/RUNNING instance holds "
     "(HM9000)."),
    ("NumberOfDesiredApps", "hm9000_number_of_desired_apps",
     "Desired apps, staging ones excluded (HM9000)."),
    ("NumberOfDesiredInstances", "hm9000_number_of_desired_instances",
     "Desired instances of desired apps, staging ones excluded (HM9000)."),
    ("NumberOfDesiredAppsPendingStaging", "hm9000_number_of_desired_apps_pending_staging",
     "Desired apps whose package is PENDING (staging) (HM9000)."),
)
NAMES = tuple(name for name, _metric, _help in GAUGES)
# Positions in a counts list, in GAUGES order.
(ALL_REPORTING, WITH_MISSING, UNDESIRED_RUNNING, RUNNING_INSTANCES, MISSING_INDICES,
 CRASHED_INSTANCES, CRASHED_INDICES, DESIRED_APPS, DESIRED_INSTANCES,
 PENDING_STAGING) = range(len(GAUGES))

_CRASHED_STATES = (CRASHED, FLAPPING)
_DESIRED_PACKAGES = (STAGED, PENDING)


def count_droplet(counts, droplet, now, droplet_lost, desired_state_lost):
    """Add one droplet's versions to `counts` (a list in GAUGES order)."""
    live_version = droplet.live_version
    desired = (droplet.state == STARTED and live_version is not None
               and droplet.package_state in _DESIRED_PACKAGES
               and not droplet.is_extra(now, desired_state_lost))
    reporting: set[int] = set()
    for version, instances in droplet.versions.items():
        running = 0
        for index, record in instances.items():
            live = len(record.live_guids(now, droplet_lost))
            running += live
            crashed = not live and record.state in _CRASHED_STATES
            if crashed:
                counts[CRASHED_INDICES] += 1
            if (live or crashed) and version == live_version:
                reporting.add(index)
        counts[RUNNING_INSTANCES] += running
        if running and not (desired and version == live_version):
            counts[UNDESIRED_RUNNING] += 1
    counts[CRASHED_INSTANCES] += sum(1 for seen, _ in droplet.crashes.values()
                                     if now - seen <= droplet_lost)
    if not desired:
        return
    if droplet.package_state == PENDING:
        counts[PENDING_STAGING] += 1
        return
    wanted = droplet.num_instances
    counts[DESIRED_APPS] += 1
    counts[DESIRED_INSTANCES] += wanted
    missing = wanted - sum(1 for index in reporting if index < wanted)
    if missing:
        counts[WITH_MISSING] += 1
        counts[MISSING_INDICES] += missing
    else:
        counts[ALL_REPORTING] += 1


class _GaugePass:
    """One walk over a snapshot of the registry, a slice per reactor turn."""

    __slots__ = ("droplets", "position", "counts", "fresh", "done", "next_slice")

    def __init__(self, droplets, fresh):
        self.droplets = droplets
        self.position = 0
        self.counts = [0] * len(GAUGES)
        self.fresh = fresh  # both states fresh when the pass began
        self.done: defer.Deferred[None] = defer.Deferred()
        self.next_slice = None  # the Receipt of the slice to come


class Hm9000Gauges:
    """Keeps HM9000's ten gauges for /varz and /metrics (cc_protocol: hm9000)."""

    log = Logger()

    def __init__(self, registry, scheduler, intervals, actual_freshness, desired_state,
                 metrics, slice_size=200):
        """`slice_size` droplets are counted per reactor turn (the analysis pass's
        `number_of_droplets_analyzed_per_analysis_iteration`)."""
        self._registry = registry
        self._scheduler = scheduler
        self._intervals = intervals
        self._actual_freshness = actual_freshness
        self._desired_state = desired_state
        self._metrics = metrics
        self._slice_size = slice_size
        self._counts = None  # of the last pass that was fresh throughout
        self._pass: _GaugePass | None = None

    def prepare(self):
        """Register the periodic pass and make the gauges part of /varz and /metrics."""
        self._scheduler.at_interval(self._intervals.droplets_analysis, self.update,
                                    "hm9000_gauges")
        self._metrics.set_contract_gauges_source(self.gauges)

    def stop(self):
        """Abandon a pass in progress (its Deferred fires), so that stopping waits for
        nothing."""
        running, self._pass = self._pass, None
        if running is not None:
            if running.next_slice is not None:
                running.next_slice.cancel()
            running.done.callback(None)

    def values(self):
        """{HM9000 name: count}, or None while a state is not fresh or no pass that was
        fresh throughout has completed."""
        if self._counts is None or not self._fresh():
            return None
        return dict(zip(NAMES, self._counts, strict=True))

    def gauges(self):
        """The ten gauges as the Metrics show them (value None while not fresh)."""
        counts = self._counts if self._fresh() else None
        return [ContractGauge(name, metric, text,
                              None if counts is None else counts[position])
                for position, (name, metric, text) in enumerate(GAUGES)]

    def update(self):
        """Count every droplet once, a slice per reactor turn; fires when the pass ends."""
        if self._pass is not None:
            return self._pass.done
        gauge_pass = _GaugePass(self._registry.snapshot(), self._fresh())
        self._pass = gauge_pass
        self._count_slice(gauge_pass)
        return gauge_pass.done

    def _fresh(self):
        return self._actual_freshness.is_fresh() and self._desired_state.is_fresh()

    def _count_slice(self, gauge_pass: _GaugePass) -> None:
        if self._pass is not gauge_pass:
            return  # abandoned by stop()
        gauge_pass.next_slice = None
        try:
            now = self._scheduler.now()
            intervals = self._intervals
            droplets = gauge_pass.droplets
            end = min(gauge_pass.position + self._slice_size, len(droplets))
            registered = self._registry.get
            for position in range(gauge_pass.position, end):
                droplet = droplets[position]
                if registered(droplet.id) is droplet:  # not removed mid-pass
                    count_droplet(gauge_pass.counts, droplet, now, intervals.droplet_lost,
                                  intervals.desired_state_lost)
            gauge_pass.position = end
            if end < len(droplets):
                gauge_pass.next_slice = self._scheduler.immediately(
                    lambda: self._count_slice(gauge_pass), "hm9000_gauges slice")
                return
            fresh = gauge_pass.fresh and self._fresh()
            self._counts = gauge_pass.counts if fresh else None
        except Exception:
            self.log.failure("HM9000 gauges pass failed: gauges unknown until the next")
            self._counts = None
        self._pass = None
        gauge_pass.done.callback(None)
