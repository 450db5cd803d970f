"""StateView: the one read-only window the status port's resources look through.

Owns the operator's questions: is this health manager able to work (/healthz), what the
foundation looks like (the summary), what each app and instance is doing, and, when the
health manager is not acting on an instance, why not (the `reason`). It reads the registry,
the desired and actual freshness, the leadership, the bus, the Nudger and the HA journal;
it never changes any of them.
"""

import time
from typing import TYPE_CHECKING, Any

from health_manager.constants import CRASHED, DOWN, FLAPPING, RUNNING, STAGED, STARTED, STARTING
from health_manager.durable import NothingDurable
from health_manager.metrics import START_REASONS, HealthFacts
from health_manager.model.droplet import Droplet
from health_manager.model.instance import AppInstance

if TYPE_CHECKING:
    from health_manager.config import Config
    from health_manager.freshness import ActualFreshness
    from health_manager.interfaces import IDesiredState, IDurableState, ILeadership, IMessageBus
    from health_manager.metrics import Metrics
    from health_manager.model.registry import DropletRegistry
    from health_manager.nudger import Nudger
    from health_manager.scheduler import Scheduler


def clock_time(seconds: float) -> str:
    """HH:MM:SS UTC of a scheduler time (epoch seconds on the real reactor)."""
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _seconds(value):
    return None if value is None else round(value, 1)


class StateView:
    """Read-only answers about the running health manager, computed when asked."""

    def __init__(self, config: "Config", scheduler: "Scheduler", registry: "DropletRegistry",
                 metrics: "Metrics", desired_state: "IDesiredState",
                 freshness: "ActualFreshness", leadership: "ILeadership", bus: "IMessageBus",
                 nudger: "Nudger", started_at: float,
                 durable: "IDurableState | None" = None) -> None:
        """`durable` (HA): the journal, whose start intents explain an index another
        leader has just started."""
        self._intervals = config.intervals
        self._scheduler = scheduler
        self._registry = registry
        self._metrics = metrics
        self._desired = desired_state
        self._freshness = freshness
        self._leadership = leadership
        self._bus = bus
        self._nudger = nudger
        self._started_at = started_at
        self._durable = durable if durable is not None else NothingDurable()

    def now(self) -> float:
        return self._scheduler.now()

    # -- process health ------------------------------------------------------------------

    def desired_age(self) -> float | None:
        last = self._desired.last_success
        return None if last is None else self.now() - last

    def facts(self) -> HealthFacts:
        """The state /metrics reports beside the counters."""
        leadership = self._leadership
        return HealthFacts(
            nats_connected=bool(self._bus.connected),
            nats_reconnects=getattr(self._bus, "reconnects", 0),
            nats_server=getattr(self._bus, "server", None),
            actual_fresh=self._freshness.is_fresh(),
            desired_fresh=self._desired.is_fresh(),
            desired_age=self.desired_age(),
            ha_role=leadership.role,
            ha_epoch=leadership.epoch,
            ha_transitions=leadership.transitions,
        )

    def desired_state_word(self) -> str:
        if self._desired.is_fresh():
            return "fresh"
        return "loading" if self._desired.last_success is None else "stale"

    def actual_state_word(self) -> str:
        if self._freshness.is_fresh():
            return "fresh"
        return "waiting" if self._freshness.seconds_left() is None else "warming up"

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, body) for /healthz. Not ok only when this HM cannot do its job: NATS down,
        or the desired state missing for longer than `desired_state_lost` (counted from
        start-up before the first pass). A standby is healthy: it is ready to lead."""
        reasons = []
        connected = bool(self._bus.connected)
        if not connected:
            reasons.append("NATS is not connected")
        lost = self._intervals.desired_state_lost
        if not self._desired.is_fresh():
            last = self._desired.last_success
            since = last if last is not None else self._started_at
            if self.now() - since > lost:
                reasons.append(
                    f"desired state not loaded for {self.now() - since:.0f} s "
                    f"(desired_state_lost is {lost:g} s)" if last is None else
                    f"desired state stale since {clock_time(last)} "
                    f"(over desired_state_lost, {lost:g} s)")
        body = {
            "status": "ok" if not reasons else "unavailable",
            "nats": "connected" if connected else "disconnected",
            "desired_state": self.desired_state_word(),
            "actual_state": self.actual_state_word(),
            "ha_role": self._leadership.role,
            "reasons": reasons,
        }
        return not reasons, body

    def summary(self) -> dict[str, Any]:
        """The foundation at a glance: the last analysis pass, the queue and freshness."""
        realtime = self._metrics.realtime
        analysed = self._metrics.analysis_passes.count > 0
        leadership = self._leadership
        return {
            "apps": len(self._registry),
            "analysed": analysed,
            "instances": realtime.total_instances if analysed else None,
            "running": realtime.started_running if analysed else None,
            "missing": realtime.started_missing if analysed else None,
            "crashed": realtime.started_crashes if analysed else None,
            "flapping": realtime.started_flapping if analysed else None,
            "queue_length": len(self._nudger),
            "nats": "connected" if self._bus.connected else "disconnected",
            "desired_state": self.desired_state_word(),
            "desired_state_age": _seconds(self.desired_age()),
            "actual_state": self.actual_state_word(),
            "ha_role": leadership.role,
            "ha_leader": leadership.leader_id,
            "not_acting": self.global_reason(),
        }

    def global_reason(self) -> str | None:
        """Why this HM acts on no app at all right now, or None when it may act."""
        if not self._leadership.is_acting():
            if self._leadership.role == "leader":
                return "new leader: loading what earlier leaders recorded"
            leader = self._leadership.leader_id
            return "standby: the leader acts" + (f" ({leader})" if leader else "")
        if not self._desired.is_fresh():
            last = self._desired.last_success
            if last is None:
                return "desired state not loaded yet"
            return f"desired state stale since {clock_time(last)}"
        return None

    # -- apps ----------------------------------------------------------------------------

    def droplets(self) -> list[Droplet]:
        """A snapshot list of the droplets, for paging."""
        return self._registry.snapshot()

    def is_current(self, droplet: Droplet) -> bool:
        """False once `droplet` has left the registry (removed while a page was built)."""
        return self._registry.get(droplet.id) is droplet

    def get(self, droplet_id: str) -> Droplet | None:
        return self._registry.get(droplet_id)

    def app_summary(self, droplet: Droplet) -> dict[str, Any]:
        """One /v1/apps entry."""
        now = self.now()
        running = missing = crashed = flapping = 0
        first_down = None  # the first desired index not running: the reason is its reason
        next_restart = None
        # No version is stored under a None live_version: get() then finds nothing.
        live = droplet.versions.get(droplet.live_version) or {}  # type: ignore[arg-type]
        started = droplet.state == STARTED
        wanted = droplet.num_instances if started else 0
        for index in range(wanted):
            record = live.get(index)
            state = DOWN if record is None else record.state
            if state == RUNNING or state == STARTING:
                running += 1
                continue
            if first_down is None:
                first_down = (index, record)
            if state == CRASHED:
                crashed += 1
            elif state == FLAPPING:
                flapping += 1
            else:
                missing += 1
        extra = 0
        for version, instances in droplet.versions.items():
            for index, record in instances.items():
                pending = record.pending_restart
                if pending is not None and pending.active():
                    due = pending.when() - now
                    next_restart = due if next_restart is None else min(next_restart, due)
                if record.starting_or_running and (
                        version != droplet.live_version or index >= wanted):
                    extra += 1
        queued_indices = self._nudger.queued_starts(droplet.id)
        unhealthy = bool(running < wanted or extra or flapping)
        return {
            "app": droplet.id,
            "state": droplet.state,
            "package_state": droplet.package_state,
            "version": droplet.live_version,
            "desired_instances": droplet.num_instances,
            "running": running,
            "missing": missing,
            "crashed": crashed,
            "flapping": flapping,
            "extra": extra,
            "recent_crashes": len(droplet.crashes),
            "queued_starts": sorted(queued_indices),
            "next_restart_in": _seconds(None if next_restart is None
                                        else max(0.0, next_restart)),
            "unhealthy": unhealthy,
            "reason": (None if not unhealthy else
                       self._app_reason(droplet, first_down, queued_indices, now)),
        }

    def _app_reason(self, droplet, first_down, queued, now):
        if first_down is None:
            return self.global_reason() or "extra instances: stopped at the next analysis"
        index, record = first_down
        view = self._instance_view(droplet, droplet.live_version, index, record, queued,
                                   droplet.num_instances, now)
        return f"index {index}: {view['reason']}"

    def app_detail(self, droplet_id: str) -> dict[str, Any] | None:
        """Every version and index of one app with its reason, or None when unknown."""
        droplet = self._registry.get(droplet_id)
        if droplet is None:
            return None
        now = self.now()
        queued = self._nudger.queued_starts(droplet_id)
        summary = self.app_summary(droplet)
        wanted = droplet.num_instances if droplet.state == STARTED else 0
        versions: dict[str, list[dict[str, Any]]] = {}
        live = droplet.versions.get(droplet.live_version)  # type: ignore[arg-type]
        slots: list[tuple[str, int, AppInstance | None]] = []
        for version, instances in droplet.versions.items():
            for index, record in instances.items():
                slots.append((version, index, record))
        if droplet.live_version is not None:
            # Desired indices never heard of are part of the answer too.
            for index in range(wanted):
                if live is None or index not in live:
                    slots.append((droplet.live_version, index, None))
        for version, index, slot in sorted(slots, key=lambda s: (s[0] != droplet.live_version,
                                                                  s[0], s[1])):
            versions.setdefault(version, []).append(
                self._instance_view(droplet, version, index, slot, queued, wanted, now))
        summary.update(
            last_updated=droplet.last_updated,
            memory=droplet.memory,
            desired_state_age=_seconds(now - droplet.desired_state_update_timestamp),
            missing_check_in=_seconds(max(0.0, self._intervals.droplet_lost
                                          - (now - droplet.reset_timestamp))),
            versions=versions,
        )
        return summary

    def _instance_view(self, droplet, version, index, record, queued, wanted, now):
        state = DOWN if record is None else record.state
        pending = None if record is None else record.pending_restart
        restart_in = (max(0.0, pending.when() - now)
                      if pending is not None and pending.active() else None)
        giveup = self._intervals.giveup_crash_number
        crash_count = 0 if record is None else record.crash_count
        given_up = (state == FLAPPING and giveup > 0 and crash_count > giveup
                    and restart_in is None)
        seen = None if record is None else record.last_heartbeat_time
        guids = [] if record is None else list(record.live_guids(now,
                                                                 self._intervals.droplet_lost))
        view = {
            "index": index,
            "state": state,
            "guid": None if record is None else record.guid,
            "guids": guids,
            "heartbeat_age": _seconds(None if seen is None else now - seen),
            "crash_count": crash_count,
            "next_restart_in": _seconds(restart_in),
            "given_up": given_up,
            "reason": None,
        }
        live = version == droplet.live_version and index < wanted
        if live and state in (RUNNING, STARTING):
            return view
        if not live:
            if record is not None and record.starting_or_running:
                view["reason"] = self.global_reason() or (
                    "extra instance: stopped at the next analysis")
            return view
        view["reason"] = self._why_not(droplet, index, record, queued, given_up,
                                       restart_in, crash_count, now)
        return view

    def _why_not(self, droplet, index, record, queued, given_up, restart_in, crash_count,
                 now):
        """Why a desired live-version instance that is not running is not being started."""
        reason = self.global_reason()
        if reason is not None:
            return reason
        if droplet.desired_state_update_required:
            return "waiting for the app's new desired state"
        if droplet.package_state != STAGED:
            return f"package is {droplet.package_state}: started once staged"
        if given_up:
            return f"given up after {crash_count} crashes"
        if restart_in is not None:
            return f"flapping: restart in {restart_in:.0f} s (crash {crash_count})"
        if index in queued:
            name = START_REASONS.get(queued[index], "queued")
            return f"start queued ({name}), waiting for the rate limit"
        sent = self._nudger.last_start_sent(droplet.id, index)
        lost = self._intervals.droplet_lost
        if sent is not None and now - sent <= lost:
            return f"start sent {now - sent:.0f} s ago, waiting for its heartbeat"
        intent = self._durable.previous_start(droplet.id, droplet.live_version, index, now)
        if intent is not None:
            return (f"start sent {now - intent.sent_at:.0f} s ago by the leader of epoch "
                    f"{intent.epoch}, waiting for its heartbeat")
        if not self._freshness.is_fresh():
            left = self._freshness.seconds_left()
            if left is None:
                return "waiting for NATS: actual state unknown"
            return f"waiting for actual-state freshness ({left:.0f} s left)"
        due = lost - (now - droplet.reset_timestamp)
        if due > 0:
            return f"missing check in {due:.0f} s"
        return "missing: started at the next analysis"

