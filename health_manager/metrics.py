"""Metrics: the counters and pass totals behind /varz, owned here and nowhere else.

Counters are live (HM 2.0 copied them into varz only at the end of passes, so they were
stale). Per-pass aggregates (realtime analysis totals, desired totals) show the last
completed pass, and exist with zero values from start-up because the collector reads
`total` and `running` without a nil check.
"""

import attrs


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
        "bulk_credentials_requests",
        "flapping_restarts_given_up",
    )

    def __init__(self, queue_length=lambda: 0):
        """`queue_length` is asked at read time, so `queue_length` in varz is never stale."""
        for name in self.COUNTERS:
            setattr(self, name, 0)
        self._queue_length = queue_length
        self._bus_counters = dict
        self._leadership = None
        # Starts and stops decided while this HM was not acting (HA standby), dropped.
        self.ha_suppressed_messages = 0
        self.total_users = 0
        self.rejected_messages = {}
        self.skipped_entries = {}
        self.desired = DesiredTotals()
        self.realtime = RealtimeTotals()
        self.analysis_loop_duration = 0.0
        self.bulk_update_loop_duration = 0.0

    def set_queue_length_source(self, source):
        self._queue_length = source

    def set_bus_counters_source(self, source):
        """`source()` returns the message bus's own counters (drops), read at varz time."""
        self._bus_counters = source

    def set_leadership_source(self, leadership):
        """The ILeadership whose role, leader, epoch and transitions /varz shows."""
        self._leadership = leadership

    def reject(self, subject):
        """Count a whole message rejected (bad JSON, wrong shape) on `subject`."""
        self.rejected_messages[subject] = self.rejected_messages.get(subject, 0) + 1

    def skip_entry(self, subject, count=1):
        """Count entries skipped inside an otherwise processed message on `subject`."""
        self.skipped_entries[subject] = self.skipped_entries.get(subject, 0) + count

    def publish_desired(self, totals, duration):
        self.desired = totals
        self.bulk_update_loop_duration = duration

    def publish_realtime(self, totals, duration):
        self.realtime = totals
        self.analysis_loop_duration = duration

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
                        ha_suppressed_messages=self.ha_suppressed_messages)
        varz.update(
            total_users=self.total_users,
            queue_length=self._queue_length(),
            analysis_loop_duration=self.analysis_loop_duration,
            bulk_update_loop_duration=self.bulk_update_loop_duration,
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
        return varz
