"""What an HA health manager keeps in Redis so that a restart or a failover forgets nothing
that matters (issue 11): a slot's crash record and a start's intent.

Both are small JSON values, read back by another process (maybe another version of the HM),
so reading is strict: a value that is not exactly what `to_bytes` writes is refused with
ValueError, and the loader counts and skips it.
"""

from typing import Any

import attrs
import orjson


def slot_key(app_id: str, version: str, index: int) -> str:
    """The key of one (app, version, index) slot's record or intent, under its kind."""
    return f"{app_id}:{version}:{index}"


def _optional_number(value: Any, name: str) -> float | None:
    return None if value is None else _number(value, name)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _object(data: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValueError(f"not a JSON object: {data[:80]!r}")
    return body


@attrs.frozen(slots=True)
class CrashRecord:
    """The crash history of one (app, version, index) slot, as the leader last decided it.

    `last_crash` is the DEA's crash timestamp; `restart_due` the time a pending flapping
    restart fires (both wall-clock seconds, as every HM's scheduler time is outside
    black-box mode); `given_up` says the HM no longer restarts it (giveup_crash_number)."""

    app_id: str
    version: str
    index: int
    crash_count: int
    last_crash: float | None
    flapping: bool
    given_up: bool
    restart_due: float | None

    @property
    def key(self) -> str:
        return slot_key(self.app_id, self.version, self.index)

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "app": self.app_id, "version": self.version, "index": self.index,
            "crash_count": self.crash_count, "last_crash": self.last_crash,
            "flapping": self.flapping, "given_up": self.given_up,
            "restart_due": self.restart_due})

    @classmethod
    def from_bytes(cls, data: bytes) -> "CrashRecord":
        body = _object(data)
        flapping, given_up = body.get("flapping"), body.get("given_up")
        if not isinstance(flapping, bool) or not isinstance(given_up, bool):
            raise ValueError(f"flapping and given_up must be booleans, got {flapping!r}, "
                             f"{given_up!r}")
        return cls(app_id=_text(body.get("app"), "app"),
                   version=_text(body.get("version"), "version"),
                   index=_count(body.get("index"), "index"),
                   crash_count=_count(body.get("crash_count"), "crash_count"),
                   last_crash=_optional_number(body.get("last_crash"), "last_crash"),
                   flapping=flapping, given_up=given_up,
                   restart_due=_optional_number(body.get("restart_due"), "restart_due"))


@attrs.frozen(slots=True)
class StartIntent:
    """A health.start the leader of `epoch` sent for one (app, version, index) at `sent_at`
    (Kubernetes' expectations): a new leader does not send it again while it is live."""

    app_id: str
    version: str
    index: int
    epoch: int
    sent_at: float

    @property
    def key(self) -> str:
        return slot_key(self.app_id, self.version, self.index)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"app": self.app_id, "version": self.version, "index": self.index,
                             "epoch": self.epoch, "sent_at": self.sent_at})

    @classmethod
    def from_bytes(cls, data: bytes) -> "StartIntent":
        body = _object(data)
        return cls(app_id=_text(body.get("app"), "app"),
                   version=_text(body.get("version"), "version"),
                   index=_count(body.get("index"), "index"),
                   epoch=_count(body.get("epoch"), "epoch"),
                   sent_at=_number(body.get("sent_at"), "sent_at"))
