"""How HM 2.0's Cloud Controller judged `health.start` and `health.stop`
(HealthManagerRespondent, PROTOCOL.md §3.1, §3.2). Pure functions of the CC's record of the
app (None when it has none) and the decoded payload; the simulated CC and the tests use them.
"""

from typing import Any, TypeGuard

from health_manager.constants import FAILED, STARTED
from health_manager.contracts.hm2.messages import START_SUBJECT, STOP_SUBJECT
from health_manager.contracts.verdict import CcApp, StartVerdict, StopVerdict

__all__ = ["START_SUBJECT", "STOP_SUBJECT", "RESPONDENT_QUEUE", "judge_start", "judge_stop"]

RESPONDENT_QUEUE = "cc"

MALFORMED = "malformed request"
APP_NOT_FOUND = "app not found"
NOT_STARTED = "app not STARTED"
OTHER_VERSION = "version is not the app's version"
NO_DROPLET = "app has no droplet"
ENOUGH_RUNNING = "enough instances running"
STARTED_REASON = "started"

RUNAWAY = "runaway app: stop every instance"
OLD_VERSION_WITHOUT_LIVE = "old version stop while none of the live version runs"
TOO_FEW_LEFT = "stop would leave fewer than the desired instances running"
STOPPED_REASON = "stopped"
EMPTY_INSTANCES = "empty instances: every instance"


def judge_start(app: CcApp | None, payload: object) -> StartVerdict:
    """§3.1: the first failing condition refuses; otherwise every index is started. The
    CC neither checks the index against `app.instances` nor looks at `flapping`."""
    if not _has(payload, ("droplet", "indices", "version", "running")) or not (
            isinstance(payload["indices"], list) and isinstance(payload["running"], dict)):
        return StartVerdict(False, MALFORMED)
    if app is None:
        return StartVerdict(False, APP_NOT_FOUND)
    if app.state != STARTED:
        return StartVerdict(False, NOT_STARTED)
    if payload["version"] != app.version:
        return StartVerdict(False, OTHER_VERSION)
    if not (app.staged or app.package_state == FAILED):
        return StartVerdict(False, NO_DROPLET)
    if running_count(payload["running"], app.version) >= app.instances:
        return StartVerdict(False, ENOUGH_RUNNING)
    return StartVerdict(True, STARTED_REASON, tuple(payload["indices"]))


def judge_stop(app: CcApp | None, payload: object) -> StopVerdict:
    """§3.2: an unknown app is stopped whole; otherwise `instances` is grouped by version
    and one refused group refuses the whole request."""
    if not _has(payload, ("droplet", "instances", "running")) or not (
            isinstance(payload["instances"], dict) and isinstance(payload["running"], dict)):
        return StopVerdict(False, MALFORMED)
    if app is None:
        return StopVerdict(True, RUNAWAY, None)
    running = payload["running"]
    groups: dict[object, list[object]] = {}
    try:
        for instance, version in payload["instances"].items():
            groups.setdefault(version, []).append(instance)
    except TypeError:  # a version that is a list or an object: nothing to group by
        return StopVerdict(False, MALFORMED)
    for version, instances in groups.items():
        if version != app.version:
            if running_count(running, app.version) <= 0:
                return StopVerdict(False, OLD_VERSION_WITHOUT_LIVE)
        elif (running_count(running, version) - len(instances) < app.instances
              and app.state == STARTED):
            return StopVerdict(False, TOO_FEW_LEFT)
    # As the real CC: an empty `instances` map becomes a DEA stop with no filter.
    reason = STOPPED_REASON if payload["instances"] else EMPTY_INSTANCES
    return StopVerdict(True, reason, tuple(payload["instances"]))


def running_count(running: dict, version: object) -> float:
    """`running[version]`, 0 when absent or not a number (the CC's `|| 0`)."""
    value = running.get(version, 0)
    return value if isinstance(value, (int, float)) else 0


def _has(payload: object, fields: tuple[str, ...]) -> TypeGuard[dict[str, Any]]:
    return isinstance(payload, dict) and all(payload.get(f) is not None for f in fields)
