"""Metrics: the counters and pass totals behind /varz and /metrics, owned here and nowhere else.

Counters are live (HM 2.0 copied them into varz only at the end of passes, so they were
stale). Per-pass aggregates (realtime analysis totals, desired totals) show the last
completed pass, and exist with zero values from start-up because the collector reads
`total` and `running` without a nil check.

`/varz` (`Metrics.varz`) and `/metrics` (`Metrics.families`, rendered by
health_manager/web/prometheus.py) are two renderings of these same counters. The Prometheus
families follow Prometheus naming: a `health_manager_` prefix, `_total` counters,
`_seconds` units, labels from small fixed sets only (never an app guid). A gauge whose
state is not fresh is NaN, and one that has no value yet is absent: never a stale number.
"""

import math
from collections.abc import Callable

import attrs

from health_manager.constants import HIGH, LOW, NORMAL

PREFIX = "health_manager_"
NAN = math.nan

# Start reasons by queue priority: the Harmonizer gives each reason its own priority
# (evacuation HIGH, missing NORMAL, crash LOW); flapping restarts bypass the queue.
START_REASONS = {HIGH: "evacuation", NORMAL: "missing", LOW: "crashed"}
PRIORITY_NAMES = {HIGH: "high", NORMAL: "normal", LOW: "low"}
FLAPPING_START = ("flapping", "immediate")
# The Harmonizer's stop reasons (health.stop carries none on the wire) -> label values.
STOP_REASONS = {
    "Instance mismatch": "instance_mismatch",
    "Extra app": "extra_app",
    "Droplet state is STOPPED": "app_stopped",
    "Extra instance": "extra_instance",
    "Live version mismatch": "version_mismatch",
}
UNCLASSIFIED = "unclassified"
# Subjects of the received-message counters, for the `subject` label.
RECEIVED_SUBJECTS = (
    ("heartbeat_msgs_received", "dea.heartbeat"),
    ("droplet_exited_msgs_received", "droplet.exited"),
    ("droplet_updated_msgs_received", "droplet.updated"),
    ("healthmanager_status_msgs_received", "healthmanager.status"),
    ("healthmanager_health_request_msgs_received", "healthmanager.health"),
    ("healthmanager_droplet_request_msgs_received", "healthmanager.droplet"),
)
HA_ROLES = ("single", "leader", "standby")
# Analysis pass and slice durations, in seconds: a slice should stay far below 20 ms.
PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLICE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
ANALYSIS_TASKS = ("droplets_analysis", "droplets_analysis slice")


class Histogram:
    """Bucket counts, sum and count of observed values (Prometheus histogram semantics)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def cumulative(self):
        """[(upper bound, cumulative count)] ending with +Inf."""
        total = 0
        buckets = []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        buckets.append((math.inf, self.count))
        return buckets


@attrs.frozen
class HealthFacts:
    """State the Metrics do not own, read at scrape time (built by web.state_view)."""

    nats_connected: bool
    nats_reconnects: int
    actual_fresh: bool
    desired_fresh: bool
    desired_age: float | None  # seconds since the last complete bulk pass, None before it
    ha_role: str
    ha_epoch: int | None
    ha_transitions: int
    nats_server: str | None = None  # the NATS server connected to, password redacted


@attrs.frozen
class ContractGauge:
    """A gauge a Cloud Controller contract adds to /varz and /metrics in its own names
    (HM9000's ten, say): `value` is None while the state it counts is not fresh, shown as
    -1 in /varz (as the contract's original did) and NaN in /metrics."""

    varz_name: str
    metric_name: str  # without the health_manager_ prefix
    help: str
    value: int | None


@attrs.define(slots=True)
class DesiredTotals:
    """Summed over the bulk entries of one desired-state pass."""

    apps: int = 0
    started_apps: int = 0
    instances: int = 0
    started_instances: int = 0
    memory: int = 0
    started_memory: int = 0

    def add(self, state, instances, memory):
        self.apps += 1
        self.instances += instances
        self.memory += memory * instances
        if state == "STARTED":
            self.started_apps += 1
            self.started_instances += instances
            self.started_memory += memory * instances


@attrs.define(slots=True)
class RealtimeTotals:
    """Summed over the droplets of one analysis pass (PROTOCOL.md §6.2)."""

    total_apps: int = 0
    total_instances: int = 0
    crashed_instances: int = 0
    running_instances: int = 0
    missing_instances: int = 0
    flapping_instances: int = 0
    started_apps: int = 0
    started_crashes: int = 0
    started_running: int = 0
    started_missing: int = 0
    started_flapping: int = 0


@attrs.define(slots=True)
class Hm9000Counters:
    """The HM9000 contract's own counters (health_manager/contracts/hm9000): its app-state
    API, by api (`app.state`, `app.state.bulk`, `bulk_app_state`), and its HTTPS heartbeat
    listener. They exist only with `cc_protocol: hm9000` (Metrics.enable_hm9000)."""

    app_state_requests: dict[str, int] = attrs.Factory(dict)
    app_state_bad_requests: dict[str, int] = attrs.Factory(dict)
    app_state_auth_failures: int = 0
    https_heartbeats_received: int = 0
    https_heartbeats_relayed: int = 0
    # by reason: bad_body (400), too_large (413), nats_disconnected (503)
    https_heartbeats_rejected: dict[str, int] = attrs.Factory(dict)
    # connections to the listener whose TLS failed (no client certificate, another CA's)
    https_tls_failures: int = 0
    # dea.heartbeat messages naming no DEA: their instances cannot be listed per DEA.
    heartbeats_without_dea: int = 0

    def count_request(self, api: str) -> None:
        self.app_state_requests[api] = self.app_state_requests.get(api, 0) + 1

    def count_bad_request(self, api: str) -> None:
        self.app_state_bad_requests[api] = self.app_state_bad_requests.get(api, 0) + 1

    def count_https_rejected(self, reason: str) -> None:
        rejected = self.https_heartbeats_rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def varz(self) -> dict[str, object]:
        return {
            "app_state_requests": dict(self.app_state_requests),
            "app_state_bad_requests": dict(self.app_state_bad_requests),
            "app_state_auth_failures": self.app_state_auth_failures,
            "https_heartbeats_received": self.https_heartbeats_received,
            "https_heartbeats_relayed": self.https_heartbeats_relayed,
            "https_heartbeats_rejected": dict(self.https_heartbeats_rejected),
            "https_tls_failures": self.https_tls_failures,
            "heartbeats_without_dea": self.heartbeats_without_dea,
        }

    def families(self) -> list[tuple[str, str, str, list[tuple[dict[str, str], int]]]]:
        return [
            ("app_state_requests_total", "counter",
             "HM9000 app-state API requests answered, by api.",
             [({"api": a}, n) for a, n in sorted(self.app_state_requests.items())]),
            ("app_state_bad_requests_total", "counter",
             "HM9000 app-state API requests that did not parse (answered {}), by api.",
             [({"api": a}, n) for a, n in sorted(self.app_state_bad_requests.items())]),
            ("app_state_auth_failures_total", "counter",
             "POST /bulk_app_state requests refused for want of valid credentials.",
             [({}, self.app_state_auth_failures)]),
            ("https_heartbeats_total", "counter",
             "DEA heartbeats received over HTTPS, by result (relayed on NATS, bad_body, "
             "too_large, nats_disconnected).",
             [({"result": "relayed"}, self.https_heartbeats_relayed)]
             + [({"result": r}, n) for r, n in sorted(self.https_heartbeats_rejected.items())]),
            ("https_tls_failures_total", "counter",
             "Connections to the HTTPS heartbeat listener whose TLS failed (no client "
             "certificate, or one ssl.ca_file did not sign).",
             [({}, self.https_tls_failures)]),
            ("heartbeats_without_dea_total", "counter",
             "dea.heartbeat messages naming no DEA (not listed by the app-state API).",
             [({}, self.heartbeats_without_dea)]),
        ]


class Metrics:
    """Counters incremented by the components that see the events."""

    COUNTERS = (
        "heartbeat_msgs_received",
        "droplet_exited_msgs_received",
        "droplet_updated_msgs_received",
        "healthmanager_status_msgs_received",
        "healthmanager_health_request_msgs_received",
        "healthmanager_droplet_request_msgs_received",
        "health_start_messages_sent",
        "health_stop_messages_sent",
        "instance_heartbeats_received",
        "bulk_api_errors",
        # Bulk API answers 401: wrong credentials (configured ones, or NATS-given ones
        # that changed).
        "bulk_api_unauthorized",
        "bulk_credentials_requests",
        "flapping_restarts_given_up",
        # A queued start found unneeded when its turn came (its index came back meanwhile).
        "queued_starts_dropped",
        # Stops the CC would refuse, held back until every wanted index runs (§3.2).
        "stops_deferred",
    )
    # The counters above, set by __init__ with setattr: declared here for the type checker.
    heartbeat_msgs_received: int
    droplet_exited_msgs_received: int
    droplet_updated_msgs_received: int
    healthmanager_status_msgs_received: int
    healthmanager_health_request_msgs_received: int
    healthmanager_droplet_request_msgs_received: int
    health_start_messages_sent: int
    health_stop_messages_sent: int
    instance_heartbeats_received: int
    bulk_api_errors: int
    bulk_api_unauthorized: int
    bulk_credentials_requests: int
    flapping_restarts_given_up: int
    queued_starts_dropped: int
    stops_deferred: int

    def __init__(self, queue_length=lambda: 0):
        """`queue_length` is asked at read time, so `queue_length` in varz is never stale."""
        for name in self.COUNTERS:
            setattr(self, name, 0)
        self._queue_length = queue_length
        self._bus_counters: Callable[[], dict[str, int]] = dict
        self._contract_gauges: Callable[[], list[ContractGauge]] = list
        self._leadership = None
        # Starts and stops decided while this HM was not acting (HA standby), dropped.
        self.ha_suppressed_messages = 0
        # The HA journal (ha/journal.py): records and intents written to Redis, refused by
        # the epoch fence (a deposed leader's), failed (retried), unreadable when loaded,
        # merged at promotion; and starts not repeated because another leader sent them.
        self.ha_records_written = 0
        self.ha_fenced_writes_refused = 0
        self.ha_record_write_failures = 0
        self.ha_unreadable_records = 0
        self.ha_records_restored = 0
        self.ha_starts_skipped_for_intent = 0
        self.total_users = 0
        self.rejected_messages = {}
        self.skipped_entries = {}
        self.desired = DesiredTotals()
        self.realtime = RealtimeTotals()
        self.analysis_loop_duration = 0.0
        self.bulk_update_loop_duration = 0.0
        self.starts = {}  # (reason, priority) -> count
        self.stops = {}  # reason -> count
        self.analysis_passes = Histogram(PASS_BUCKETS)
        self.analysis_slices = Histogram(SLICE_BUCKETS)
        self.analysis_longest_slice = None  # of the last completed pass
        self._slice_max = 0.0
        self._pass_completed = False
        self._desired_published = False
        self.hm9000: Hm9000Counters | None = None

    def enable_hm9000(self) -> Hm9000Counters:
        """The HM9000 contract's counters, shown in /varz and /metrics from now on."""
        if self.hm9000 is None:
            self.hm9000 = Hm9000Counters()
        return self.hm9000

    def set_queue_length_source(self, source):
        self._queue_length = source

    def set_bus_counters_source(self, source):
        """`source()` returns the message bus's own counters (drops), read at varz time."""
        self._bus_counters = source

    def set_contract_gauges_source(self, source):
        """`source()` returns the contract's gauges ([ContractGauge]), read at scrape time:
        the contract keeps them up to date, so a read costs O(1) per gauge."""
        self._contract_gauges = source

    def set_leadership_source(self, leadership):
        """The ILeadership whose role, leader, epoch and transitions /varz shows."""
        self._leadership = leadership

    def reject(self, subject):
        """Count a whole message rejected (bad JSON, wrong shape) on `subject`."""
        self.rejected_messages[subject] = self.rejected_messages.get(subject, 0) + 1

    def skip_entry(self, subject, count=1):
        """Count entries skipped inside an otherwise processed message on `subject`."""
        self.skipped_entries[subject] = self.skipped_entries.get(subject, 0) + count

    def count_start(self, priority=None):
        """Count one health.start sent: queued at `priority`, or a flapping restart (None)."""
        if priority is None:
            key = FLAPPING_START
        else:
            key = (START_REASONS.get(priority, UNCLASSIFIED),
                   PRIORITY_NAMES.get(priority, UNCLASSIFIED))
        self.starts[key] = self.starts.get(key, 0) + 1

    def count_stop(self, reason=None):
        """Count one health.stop sent; `reason` is the Harmonizer's (comma-joined) text."""
        labels = sorted({STOP_REASONS.get(part.strip(), UNCLASSIFIED)
                         for part in (reason or "").split(",")})
        label = labels[0] if len(labels) == 1 else UNCLASSIFIED
        self.stops[label] = self.stops.get(label, 0) + 1

    def publish_desired(self, totals, duration):
        self.desired = totals
        self.bulk_update_loop_duration = duration
        self._desired_published = True

    def publish_realtime(self, totals, duration):
        self.realtime = totals
        self.analysis_loop_duration = duration
        self.analysis_passes.observe(duration)
        self._pass_completed = True

    def observe_run(self, name, seconds):
        """A scheduled task ran for `seconds` (Scheduler's `on_run`): analysis slices feed
        the slice histogram and the longest slice of the pass they belong to."""
        if name not in ANALYSIS_TASKS:
            return
        self.analysis_slices.observe(seconds)
        self._slice_max = max(self._slice_max, seconds)
        # The last slice of a pass publishes the pass from inside itself, so it is
        # reported here, after it returned: it closes the pass's longest slice.
        if self._pass_completed:
            self.analysis_longest_slice = self._slice_max
            self._slice_max = 0.0
            self._pass_completed = False

    def varz(self):
        """The health manager's own /varz keys (component keys are added by the server)."""
        realtime = self.realtime
        desired = self.desired
        varz = {name: getattr(self, name) for name in self.COUNTERS}
        varz.update(self._bus_counters())
        leadership = self._leadership
        if leadership is not None:
            varz.update(ha_role=leadership.role, ha_leader=leadership.leader_id,
                        ha_epoch=leadership.epoch, ha_transitions=leadership.transitions,
                        ha_suppressed_messages=self.ha_suppressed_messages,
                        ha_records_written=self.ha_records_written,
                        ha_fenced_writes_refused=self.ha_fenced_writes_refused,
                        ha_record_write_failures=self.ha_record_write_failures,
                        ha_unreadable_records=self.ha_unreadable_records,
                        ha_records_restored=self.ha_records_restored,
                        ha_starts_skipped_for_intent=self.ha_starts_skipped_for_intent)
        varz.update(
            total_users=self.total_users,
            queue_length=self._queue_length(),
            analysis_loop_duration=self.analysis_loop_duration,
            bulk_update_loop_duration=self.bulk_update_loop_duration,
            health_starts_by_reason={f"{reason}/{priority}": count
                                     for (reason, priority), count in self.starts.items()},
            health_stops_by_reason=dict(self.stops),
            analysis_longest_slice=self.analysis_longest_slice,
            rejected_messages=dict(self.rejected_messages),
            rejected_messages_total=sum(self.rejected_messages.values()),
            skipped_entries=dict(self.skipped_entries),
            total={
                "apps": desired.apps,
                "started_apps": desired.started_apps,
                "instances": desired.instances,
                "started_instances": desired.started_instances,
                "memory": desired.memory,
                "started_memory": desired.started_memory,
            },
            total_apps=realtime.total_apps,
            total_instances=realtime.total_instances,
            crashed_instances=realtime.crashed_instances,
            running_instances=realtime.running_instances,
            missing_instances=realtime.missing_instances,
            flapping_instances=realtime.flapping_instances,
            running={
                "apps": realtime.started_apps,
                "crashes": realtime.started_crashes,
                "running_instances": realtime.started_running,
                "missing_instances": realtime.started_missing,
                "flapping_instances": realtime.started_flapping,
            },
        )
        if self.hm9000 is not None:
            varz.update(self.hm9000.varz())
        for gauge in self._contract_gauges():
            varz[gauge.varz_name] = -1 if gauge.value is None else gauge.value
        return varz

    def families(self, facts):
        """Every Prometheus family as (name, kind, help, samples), samples being
        [(labels dict, value)]; a histogram's value is a Histogram. `facts` is HealthFacts."""
        realtime = self.realtime
        analysed = self.analysis_passes.count > 0
        # Instance figures are only true while both states are fresh: NaN otherwise.
        trusted = facts.actual_fresh and facts.desired_fresh

        def figure(value):
            return value if trusted else NAN

        bus = self._bus_counters()
        families = [
            ("messages_received_total", "counter", "NATS messages received, by subject.",
             [({"subject": subject}, getattr(self, name))
              for name, subject in RECEIVED_SUBJECTS]),
            ("instance_heartbeats_total", "counter",
             "Instance entries received in dea.heartbeat messages.",
             [({}, self.instance_heartbeats_received)]),
            ("rejected_messages_total", "counter",
             "Whole messages rejected as unreadable, by subject.",
             [({"subject": s}, n) for s, n in sorted(self.rejected_messages.items())]),
            ("skipped_entries_total", "counter",
             "Entries skipped inside otherwise processed messages, by subject.",
             [({"subject": s}, n) for s, n in sorted(self.skipped_entries.items())]),
            ("starts_total", "counter", "health.start messages sent, by reason and priority.",
             [({"reason": r, "priority": p}, n) for (r, p), n in sorted(self.starts.items())]),
            ("stops_total", "counter", "health.stop messages sent, by reason.",
             [({"reason": r}, n) for r, n in sorted(self.stops.items())]),
            ("flapping_given_up_total", "counter",
             "Crashes of flapping instances that were not restarted (given up).",
             [({}, self.flapping_restarts_given_up)]),
            ("queue_length", "gauge", "health.start requests waiting in the queue.",
             [({}, self._queue_length())]),
            ("analysis_pass_seconds", "histogram", "Duration of complete analysis passes.",
             [({}, self.analysis_passes)]),
            ("analysis_slice_seconds", "histogram",
             "Duration of analysis slices (the reactor is blocked for one slice).",
             [({}, self.analysis_slices)]),
            ("analysis_longest_slice_seconds", "gauge",
             "The longest slice of the last complete analysis pass.",
             [] if self.analysis_longest_slice is None
             else [({}, self.analysis_longest_slice)]),
            ("desired_state_fetch_seconds", "gauge",
             "Duration of the last complete desired-state (bulk API) pass.",
             [({}, self.bulk_update_loop_duration)] if self._desired_published else []),
            ("desired_state_age_seconds", "gauge",
             "Seconds since the last complete desired-state pass.",
             [] if facts.desired_age is None else [({}, facts.desired_age)]),
            ("desired_state_errors_total", "counter", "Failed desired-state passes.",
             [({}, self.bulk_api_errors)]),
            ("bulk_credentials_requests_total", "counter",
             "Bulk API credentials requested over NATS.",
             [({}, self.bulk_credentials_requests)]),
            ("bulk_api_unauthorized_total", "counter",
             "Bulk API requests refused with HTTP 401 (wrong credentials).",
             [({}, self.bulk_api_unauthorized)]),
            ("actual_state_fresh", "gauge",
             "1 when the heartbeats can be trusted to be complete, else 0.",
             [({}, int(facts.actual_fresh))]),
            ("desired_state_fresh", "gauge",
             "1 when the desired state is recent enough to act on, else 0.",
             [({}, int(facts.desired_fresh))]),
            ("instances", "gauge",
             "Desired instances of started apps by state, at the last analysis pass "
             "(NaN while actual or desired state is not fresh).",
             [({"state": "running"}, figure(realtime.started_running)),
              ({"state": "missing"}, figure(realtime.started_missing)),
              ({"state": "flapping"}, figure(realtime.started_flapping)),
              ({"state": "crashed"}, figure(realtime.started_crashes))]
             if analysed else []),
            ("apps", "gauge",
             "Apps known at the last analysis pass (NaN while a state is not fresh).",
             [({}, figure(realtime.total_apps))] if analysed else []),
            ("desired_instances", "gauge",
             "Instances the Cloud Controller wants running (NaN while desired state is "
             "not fresh).",
             [({}, self.desired.started_instances if facts.desired_fresh else NAN)]
             if self._desired_published else []),
            ("nats_connected", "gauge", "1 while connected to NATS, else 0.",
             [({}, int(facts.nats_connected))]),
            ("nats_reconnects_total", "counter", "NATS reconnections after a lost link.",
             [({}, facts.nats_reconnects)]),
            ("nats_server", "gauge",
             "1, labelled with the NATS server connected to (none while disconnected).",
             [] if facts.nats_server is None else [({"server": facts.nats_server}, 1)]),
            ("nats_dropped_publications_total", "counter",
             "Publications dropped because the NATS buffer was full.",
             [({}, bus.get("nats_dropped_publications", 0))]),
            ("nats_slow_consumer_drops_total", "counter",
             "Messages the NATS client dropped as a slow consumer.",
             [({}, bus.get("nats_slow_consumer_drops", 0))]),
            ("ha_role", "gauge", "1 for this health manager's current HA role.",
             [({"role": role}, int(role == facts.ha_role)) for role in HA_ROLES]),
            ("ha_epoch", "gauge", "Fencing epoch of the lease held or last seen.",
             [] if facts.ha_epoch is None else [({}, facts.ha_epoch)]),
            ("ha_transitions_total", "counter", "Changes of this health manager's HA role.",
             [({}, facts.ha_transitions)]),
            ("ha_journal_writes_total", "counter",
             "Crash records and start intents sent to Redis, by result (refused: fenced "
             "off by a newer leader's epoch; failed: Redis unavailable, retried).",
             [({"result": "written"}, self.ha_records_written),
              ({"result": "refused"}, self.ha_fenced_writes_refused),
              ({"result": "failed"}, self.ha_record_write_failures)]),
            ("ha_unreadable_records_total", "counter",
             "Entries in Redis that could not be read when loading, skipped.",
             [({}, self.ha_unreadable_records)]),
            ("ha_records_restored_total", "counter",
             "Crash records loaded at promotion that were newer than this HM's memory.",
             [({}, self.ha_records_restored)]),
            ("ha_starts_skipped_for_intent_total", "counter",
             "Starts not sent because another leader's recorded start may still come up.",
             [({}, self.ha_starts_skipped_for_intent)]),
        ]
        if self.hm9000 is not None:
            families.extend(self.hm9000.families())
        families.extend(
            (gauge.metric_name, "gauge", gauge.help,
             [({}, NAN if gauge.value is None else gauge.value)])
            for gauge in self._contract_gauges())
        return [(PREFIX + name, kind, text, samples)
                for name, kind, text, samples in families]
