"""How HM9000's Cloud Controllers judged `hm9000.start` and `hm9000.stop` (HM9000.md §1.4;
ccng `lib/cloud_controller/dea/hm9000/respondent.rb@712ddc390b`, 2016-05, the same rules
from 2013-11 to 2017-06). Pure functions of the CC's record of the app (None when it has
none) and the decoded payload; the simulated CC and the tests use them.

The CC counts nothing: a start is judged without looking at what runs, and a stop with
`is_duplicate` true is executed unconditionally. Apps on Diego are not simulated (no app
here runs on Diego), so the CC's "participating in DIEGO BETA" rule, second in both lists,
never matches and is left out.
"""

from typing import Any, TypeGuard

from health_manager.constants import FAILED, STAGED, STARTED, STOPPED
from health_manager.contracts.hm9000.policy import START_SUBJECT, STOP_SUBJECT
from health_manager.contracts.verdict import CcApp, StartVerdict, StopVerdict

__all__ = ["START_SUBJECT", "STOP_SUBJECT", "RESPONDENT_QUEUE", "judge_start", "judge_stop"]

RESPONDENT_QUEUE = "cc"
START_KEYS = ("droplet", "version", "instance_index")
STOP_KEYS = ("droplet", "version", "instance_guid", "instance_index", "is_duplicate")

# The CC logs `cloudcontroller.hm9000.malformed-request` and drops the message.
MALFORMED = "malformed request"

# Start: refused, first match wins.
APP_NOT_FOUND = "App not found"
VERSION_NOT_CURRENT = "Version is not current"
INDEX_OUTSIDE = "Instance index is outside desired number of instances"
NO_DROPLET_HASH = "App is not uploaded (no droplet hash)"
NOT_STAGED = "App is not staged"
NOT_STARTED = "App is not in STARTED state"
WILL_START = "will-start"

# Stop: accepted, first match wins (APP_NOT_FOUND, VERSION_NOT_CURRENT and INDEX_OUTSIDE
# too).
STAGING_FAILED = "App failed to stage"
DUPLICATE = "Instance is duplicate"
APP_STOPPED = "App is in STOPPED state"
WILL_NOT_STOP = "will-not-stop"


def judge_start(app: CcApp | None, payload: object) -> StartVerdict:
    """Refused on the first rule that matches; otherwise exactly `instance_index` is
    started, however many instances already run."""
    if not _has_keys(payload, START_KEYS):
        return StartVerdict(False, MALFORMED)
    index = payload["instance_index"]
    if app is None:
        return StartVerdict(False, APP_NOT_FOUND)
    if app.version != payload["version"]:
        return StartVerdict(False, VERSION_NOT_CURRENT)
    if not _is_number(index):
        # Ruby's `>=` raises on it: the handler dies and nothing is started.
        return StartVerdict(False, MALFORMED)
    if index >= app.instances:
        return StartVerdict(False, INDEX_OUTSIDE)
    if not app.staged:
        return StartVerdict(False, NO_DROPLET_HASH)
    if app.package_state != STAGED:
        return StartVerdict(False, NOT_STAGED)
    if app.state != STARTED:
        return StartVerdict(False, NOT_STARTED)
    return StartVerdict(True, WILL_START, (index,))


def judge_stop(app: CcApp | None, payload: object) -> StopVerdict:
    """Accepted on the first rule that matches, as `dea.stop` of exactly `instance_guid`;
    otherwise refused."""
    if not _has_keys(payload, STOP_KEYS):
        return StopVerdict(False, MALFORMED)
    stop = (payload["instance_guid"],)
    index = payload["instance_index"]
    if app is None:
        return StopVerdict(True, APP_NOT_FOUND, stop)
    if app.package_state == FAILED:
        return StopVerdict(True, STAGING_FAILED, stop)
    # Ruby truthiness: everything but null and false, so 0 and "false" are duplicates.
    if payload["is_duplicate"] is not None and payload["is_duplicate"] is not False:
        return StopVerdict(True, DUPLICATE, stop)
    if app.version != payload["version"]:
        return StopVerdict(True, VERSION_NOT_CURRENT, stop)
    if not _is_number(index):
        return StopVerdict(False, MALFORMED)
    if index >= app.instances:
        return StopVerdict(True, INDEX_OUTSIDE, stop)
    if app.state == STOPPED:
        return StopVerdict(True, APP_STOPPED, stop)
    return StopVerdict(False, WILL_NOT_STOP)


def _has_keys(payload: object, keys: tuple[str, ...]) -> TypeGuard[dict[str, Any]]:
    # Ruby's `fetch`: a key must be present; a null value passes.
    return isinstance(payload, dict) and all(key in payload for key in keys)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
