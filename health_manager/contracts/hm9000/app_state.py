"""The answer to HM9000's app-state questions: the App JSON of HM9000.md §2.2 for a
(droplet, version), one or many, from the registry (desired state, crash counts) and the
HeartbeatLedger (every instance each DEA lists).

Shape decisions (HM9000.md §2.2):
- `desired` carries the fields of 2013-11-20 to 2016-05 (`id`, `version`, `instances`,
  `state`, `package_state`; HM9000 dropped `memory` and `updated_at` before cf-release
  v151, the first to run HM9000, and `desired` itself in v238). No CC reads `desired`, so
  keeping it is harmless to later CCs and true to the era that had it.
- An app exists when it is desired (STARTED, package STAGED or PENDING, this version) or an
  instance of it is listed: HM9000 until v238. So a desired app without heartbeats answers
  with an empty `instance_heartbeats`, which the CC reads as 0 healthy, not "unknown".
- The reply is `{}` while the actual state is not fresh, as HM9000's from v238 on (only
  actual freshness gates it): a CC asking during a bulk-API outage still sees its instances.
"""

from collections.abc import Generator, Sequence
from typing import Any

import msgspec
import orjson
from twisted.internet.interfaces import IReactorTime

from health_manager.constants import PENDING, STAGED, STARTED
from health_manager.contracts.hm9000.ledger import HeartbeatLedger, Listed, Report, collect
from health_manager.freshness import ActualFreshness
from health_manager.model.heartbeat import Heartbeat
from health_manager.model.instance import AppInstance
from health_manager.model.registry import DropletRegistry
from health_manager.slicing import Sliced

EMPTY = b"{}"
NOT_DESIRED = {"id": "", "version": "", "instances": 0, "state": "", "package_state": ""}
DESIRED_PACKAGE_STATES = frozenset((STAGED, PENDING))
SLICE_BUDGET = 0.010  # seconds of one reactor turn spent answering a query
DEAS_PER_STEP = 32  # DEAs scanned between two looks at the turn's budget (~0.15 ms)


class BadRequest(ValueError):
    """An app-state request that does not parse; the message says why."""


class AppStateRequest(msgspec.Struct):
    # As HM9000's Go decode: a missing field is "", another type is an error.
    droplet: str = ""
    version: str = ""


_ONE = msgspec.json.Decoder(AppStateRequest)
_MANY = msgspec.json.Decoder(list[AppStateRequest])


def parse_app_request(data: bytes) -> tuple[str, str]:
    """(droplet, version) of an `app.state` request `{"droplet", "version"}`."""
    try:
        request = _ONE.decode(data)
    except msgspec.DecodeError as e:
        raise BadRequest(str(e)) from None
    return request.droplet, request.version


def parse_bulk_request(data: bytes) -> list[tuple[str, str]]:
    """[(droplet, version)] of a bulk request, a JSON array of `{"droplet", "version"}`."""
    try:
        requests = _MANY.decode(data)
    except msgspec.DecodeError as e:
        raise BadRequest(str(e)) from None
    return [(request.droplet, request.version) for request in requests]


def crash_series(record: AppInstance, now: float,
                 flapping_timeout: float) -> tuple[int, float] | None:
    """(crash count, first crash of the series) of a slot's current crash series, or None
    when it has none: HM9000 forgot a count `flapping_timeout` after its last crash (the
    record's TTL), while the slot model only restarts it at the next crash. The series'
    first crash is HM9000's `created_at`, which the CC shows as FLAPPING "since"."""
    last_crash = record.last_crash_timestamp
    since = record.crashes_since
    if (record.crash_count <= 0 or last_crash is None or since is None
            or now - last_crash > flapping_timeout):
        return None
    return record.crash_count, since


class AppStateRenderer:
    """Renders App JSON; `clock` is the Scheduler's (fake time in black-box mode)."""

    def __init__(self, registry: DropletRegistry, ledger: HeartbeatLedger,
                 freshness: ActualFreshness, clock: IReactorTime,
                 flapping_timeout: float) -> None:
        self._registry = registry
        self._ledger = ledger
        self._freshness = freshness
        self._clock = clock
        self._flapping_timeout = flapping_timeout

    def is_fresh(self) -> bool:
        return self._freshness.is_fresh()

    def present(self) -> list[Report]:
        """The reports a query scans (HeartbeatLedger.present)."""
        return self._ledger.present()

    def app(self, droplet_id: str, version: str,
            listed: Sequence[tuple[str, Heartbeat]]) -> dict[str, Any] | None:
        """The App JSON of (droplet, version), or None when the app does not exist.
        `listed`: the droplet's (dea, entry) pairs, all versions (ledger.collect)."""
        heartbeats = [
            {"droplet": beat.droplet, "version": beat.version, "instance": beat.instance,
             "index": beat.index, "state": beat.state,
             # EVACUATING entries may carry none: Go's zero value.
             "state_timestamp": float(beat.state_timestamp or 0), "dea_guid": dea}
            for dea, beat in listed if beat.version == version]
        droplet = self._registry.get(droplet_id)
        desired = None
        if (droplet is not None and droplet.state == STARTED
                and droplet.live_version == version
                and droplet.package_state in DESIRED_PACKAGE_STATES):
            desired = {"id": droplet_id, "version": version,
                       "instances": droplet.num_instances, "state": droplet.state,
                       "package_state": droplet.package_state}
        if desired is None and not heartbeats:
            return None
        crash_counts = []
        slots = None if droplet is None else droplet.versions.get(version)
        if slots:
            now = self._clock.seconds()
            for index, record in sorted(slots.items()):
                series = crash_series(record, now, self._flapping_timeout)
                if series is not None:
                    crash_counts.append({
                        "droplet": droplet_id, "version": version, "instance_index": index,
                        "crash_count": series[0], "created_at": int(series[1])})
        return {"droplet": droplet_id, "version": version,
                "desired": NOT_DESIRED if desired is None else desired,
                "instance_heartbeats": heartbeats, "crash_counts": crash_counts}


def app_state_query(renderer: AppStateRenderer, requests: list[tuple[str, str]],
                    reactor: IReactorTime,
                    budget: float = SLICE_BUDGET) -> "Sliced[dict[str, bytes] | None]":
    """One question for apps, answered over as many reactor turns as it needs (at most
    `budget` seconds each): the present DEAs' latest heartbeats are scanned for the wanted
    droplets (4 ms per 100k instances), then each app is rendered. It fires with
    guid -> App JSON (bytes) for the apps that exist, or None when the actual state is not
    fresh as it begins. A guid asked twice shows the last of its versions that exists (as
    HM9000's map assignment)."""
    return Sliced(reactor, _answer(renderer, requests), budget)


def _answer(renderer: AppStateRenderer, requests: list[tuple[str, str]]
            ) -> Generator[None, None, dict[str, bytes] | None]:
    """The query as steps, each a small bounded piece of work."""
    if not renderer.is_fresh():
        return None
    reports = renderer.present()
    wanted = {droplet for droplet, _ in requests}
    listed: Listed = {}
    for start in range(0, len(reports), DEAS_PER_STEP):
        collect(reports[start:start + DEAS_PER_STEP], wanted, listed)
        yield
    render = renderer.app
    found: dict[str, bytes] = {}
    for droplet, version in requests:
        app = render(droplet, version, listed.get(droplet, ()))
        if app is not None:
            found[droplet] = orjson.dumps(app)
        yield
    return found


def bulk_body(found: dict[str, bytes] | None) -> bytes:
    """The bulk reply: guid -> App JSON, `{}` when not fresh (None)."""
    if not found:
        return EMPTY
    return b"{" + b",".join(orjson.dumps(guid) + b":" + app
                            for guid, app in found.items()) + b"}"


def single_body(found: dict[str, bytes] | None, droplet: str) -> bytes:
    """The `app.state` reply: the App JSON, `{}` when not fresh or unknown."""
    return EMPTY if not found else found.get(droplet, EMPTY)
