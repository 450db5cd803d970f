"""One instance slot of a droplet: the record kept per (version, index)."""

from typing import Any, Protocol

from health_manager.constants import CRASHED, DOWN, FLAPPING, RUNNING, STARTING

# Exited instances a slot remembers, so their late heartbeats are ignored: a crash, a stopped
# duplicate and a replacement that failed at once fit.
EXITS_REMEMBERED = 3


class RestartReceipt(Protocol):
    """A scheduled restart's receipt (scheduler.Receipt), as the slot holds it."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...

    def when(self) -> float: ...


class AppInstance:
    """State and crash history of one (version, index) slot, and the instances on it.

    A slot has one *primary* instance (`guid`, the one it keeps, heard since `since`) and,
    rarely, duplicates: other instances heard STARTING/RUNNING on the same index while the
    primary is alive (`duplicates`: guid -> [last heartbeat time, state, first heard], None
    when there are none). HM 2.0
    kept only a stream of the last three guids and picked "the other one" as extra, so two
    instances heartbeating in turn were named in turn and both could be stopped (§5.3). Here
    the primary stays primary while it lives, and only duplicates are ever stopped: the
    choice is stable, whatever order the heartbeats come in.
    """

    __slots__ = ("state", "guid", "last_heartbeat_time", "state_timestamp", "crash_count",
                 "last_crash_timestamp", "crashes_since", "pending_restart", "duplicates",
                 "exited", "since")

    state: str
    guid: str | None
    last_heartbeat_time: float | None
    state_timestamp: float | None
    crash_count: int
    last_crash_timestamp: float | None
    crashes_since: float | None
    pending_restart: RestartReceipt | None
    # guid -> [last heartbeat time, state, first heard]: a list, updated in place.
    duplicates: dict[str, list[Any]] | None
    exited: tuple[str | None, ...] | None
    since: float | None

    def __init__(self, now: float) -> None:
        self.state = DOWN
        self.guid = None
        self.last_heartbeat_time = None
        self.state_timestamp = now
        self.crash_count = 0
        self.last_crash_timestamp = None
        # The first crash of the counted series (HM9000's crash count `created_at`).
        self.crashes_since = None
        self.pending_restart = None
        self.duplicates = None
        # The last few instances that exited or crashed here: a heartbeat of one that arrives
        # late (NATS orders no two subjects) must not bring it back to life.
        self.exited = None
        self.since = None  # when this HM first heard the primary

    @property
    def starting_or_running(self) -> bool:
        return self.state == RUNNING or self.state == STARTING

    def receive_heartbeat(self, state: str, guid: str, state_timestamp: float | None,
                          now: float, droplet_lost: float) -> str | None:
        """Apply one heartbeat entry (§5.1). Returns the guid when it is a duplicate heard
        for the first time (a new instance on an index the primary still holds), else None.
        """
        if state == RUNNING or state == STARTING:
            if self.exited is not None and guid in self.exited:
                return None
            primary = self.guid
            if guid == primary:
                self.last_heartbeat_time = now
                self.state = state
                self.state_timestamp = state_timestamp
                return None
            alive = ((self.state == RUNNING or self.state == STARTING)
                     and self.last_heartbeat_time is not None
                     and now - self.last_heartbeat_time <= droplet_lost)
            if not alive:
                # The index was down (or its instance vanished): this one takes it over.
                first = now
                if self.duplicates is not None and guid in self.duplicates:
                    first = self.duplicates[guid][2]
                    self._forget_duplicate(guid)
                self._hold(guid, now, state, first, state_timestamp)
                return None
            duplicates = self.duplicates
            if duplicates is None:
                duplicates = self.duplicates = {}
            heard = duplicates.get(guid)
            duplicates[guid] = [now, state, now if heard is None else heard[2]]
            if state == RUNNING and self.state == STARTING:
                # A running instance is worth more than a starting one: keep it instead, so
                # a stop never removes the only instance that has come up.
                self._swap_primary(guid)
            return guid if heard is None else None
        # CRASHED (or EVACUATING): that instance no longer holds the index.
        if guid == self.guid:
            if self.state == RUNNING or self.state == STARTING:
                self._primary_gone(now)
        elif self.duplicates is not None and guid in self.duplicates:
            self._forget_duplicate(guid)
            self._remember_exit(guid)
        return None

    def live_guids(self, now: float, droplet_lost: float) -> dict[str, str]:
        """{guid: state} of the instances alive on this slot, primary first."""
        live: dict[str, str] = {}
        if ((self.state == RUNNING or self.state == STARTING)
                and self.last_heartbeat_time is not None
                and now - self.last_heartbeat_time <= droplet_lost):
            live[self.guid] = self.state  # type: ignore[index]  # a heard primary has a guid
        if self.duplicates is not None:
            for guid, (seen, state, _) in self.duplicates.items():
                if now - seen <= droplet_lost:
                    live[guid] = state
        return live

    def is_proven(self, now: float, droplet_lost: float) -> bool:
        """The primary is RUNNING and has been heard over at least `droplet_lost`.

        A dead instance's heartbeats can arrive late, but only within the bus's delivery
        delay, so it is never proven: no duplicate is stopped in favour of one that may be
        gone (after an HM restart, say, or behind a late heartbeat)."""
        seen = self.last_heartbeat_time
        return (self.state == RUNNING and seen is not None and now - seen <= droplet_lost
                # since is set whenever a primary is heard, so whenever state is RUNNING.
                and seen - self.since >= droplet_lost)  # type: ignore[operator]

    def refresh(self, now: float, droplet_lost: float) -> None:
        """For a slot with duplicates: forget those not heard for `droplet_lost`, and let a
        live one take over from a primary that vanished or went down."""
        # Called only for a slot with duplicates: they are not None here, nor in _promote,
        # _swap_primary and _forget_duplicate (the ignores below say so to mypy).
        duplicates = self.duplicates
        for guid in [g for g, (seen, _, _) in duplicates.items()  # type: ignore[union-attr]
                     if now - seen > droplet_lost]:
            del duplicates[guid]  # type: ignore[union-attr]
        if not duplicates:
            self.duplicates = None
            return
        seen = self.last_heartbeat_time
        if (not (self.state == RUNNING or self.state == STARTING)
                or seen is None or now - seen > droplet_lost):
            self._promote(now)

    def is_alive(self, now: float, droplet_lost: float) -> bool:
        return (self.state != CRASHED and self.last_heartbeat_time is not None
                and now - self.last_heartbeat_time <= droplet_lost)

    def is_missing(self, now: float, droplet_lost: float) -> bool:
        return self.pending_restart is None and not self.is_alive(now, droplet_lost)

    def mark_down(self, now: float) -> None:
        self.state = DOWN
        self.state_timestamp = now

    def mark_down_for_guid(self, guid: str, now: float) -> bool:
        """`guid` exited (§5.4). The slot goes DOWN only if it was its primary and no
        duplicate is left to take over; True when the slot is still held by an instance."""
        if guid == self.guid and self.guid is not None:
            self._primary_gone(now)
        else:
            if self.duplicates is not None and guid in self.duplicates:
                self._forget_duplicate(guid)
            self._remember_exit(guid)
        return self.state == RUNNING or self.state == STARTING

    def crash(self, crash_timestamp: float, flapping_timeout: float, flapping_death: int,
              held: bool) -> None:
        """Count a crash (§5.4): the count restarts after a quiet `flapping_timeout`. The
        slot becomes CRASHED or FLAPPING unless another instance still `held` it."""
        if (self.last_crash_timestamp is not None
                and crash_timestamp - self.last_crash_timestamp > flapping_timeout):
            self.crash_count = 0
        if self.crash_count == 0:
            self.crashes_since = crash_timestamp
        self.crash_count += 1
        self.last_crash_timestamp = crash_timestamp
        if not held:
            self.state = FLAPPING if self.crash_count > flapping_death else CRASHED

    def adopt_crash_record(self, crash_count: int, last_crash: float | None,
                           flapping_timeout: float, flapping_death: int) -> bool:
        """Merge a stored crash history into this slot (an HA promotion). Two histories
        within `flapping_timeout` of each other are one series seen by two HMs: it keeps
        the higher count, so a give-up or the doubling backoff carries on; otherwise the
        later series wins, as `crash()` would have restarted the count. True when the stored
        history is at least as recent as this slot's (its pending restart is then the one
        to keep); the slot's state follows unless an instance holds it now."""
        if last_crash is None:
            return False
        mine = self.last_crash_timestamp
        if mine is not None and mine - last_crash > flapping_timeout:
            return False  # the stored series ended before this slot's began
        if mine is None or last_crash - mine > flapping_timeout:
            self.crash_count = crash_count
            # The record keeps no series start; its last crash is the earliest known.
            self.crashes_since = last_crash
        else:
            self.crash_count = max(self.crash_count, crash_count)
        self.last_crash_timestamp = last_crash if mine is None else max(mine, last_crash)
        if not (self.state == RUNNING or self.state == STARTING):
            self.state = FLAPPING if self.crash_count > flapping_death else CRASHED
        return mine is None or last_crash >= mine

    def cancel_pending_restart(self) -> bool:
        """Cancel a scheduled flapping restart; True if one was pending."""
        receipt = self.pending_restart
        if receipt is None:
            return False
        self.pending_restart = None
        receipt.cancel()
        return True

    # -- the instances on the slot --------------------------------------------------------

    def _remember_exit(self, guid: str | None) -> None:
        exited = self.exited
        if exited is None:
            self.exited = (guid,)
        elif guid not in exited:
            self.exited = (exited + (guid,))[-EXITS_REMEMBERED:]

    def _primary_gone(self, now: float) -> None:
        self._remember_exit(self.guid)
        if self.duplicates:
            self._promote(now)
        else:
            self.mark_down(now)

    def _promote(self, now: float) -> None:
        """The most recently heard duplicate becomes the primary (ties: the smallest guid)."""
        guid, (seen, state, first) = max(self.duplicates.items(),  # type: ignore[union-attr]
                                         key=lambda item: (item[1][0], _reverse(item[0])))
        self._forget_duplicate(guid)
        self._hold(guid, seen, state, first, now)

    def _swap_primary(self, guid: str) -> None:
        """`guid`, a duplicate, becomes the primary; the primary becomes a duplicate."""
        seen, state, first = self.duplicates.pop(guid)  # type: ignore[union-attr]
        # A swap happens only while the primary is alive, so it has a guid.
        self.duplicates[self.guid] = [  # type: ignore[index]
            self.last_heartbeat_time, self.state, self.since]
        self._hold(guid, seen, state, first, self.state_timestamp)

    def _hold(self, guid: str, seen: float, state: str, since: float,
              state_timestamp: float | None) -> None:
        """`guid` becomes the slot's primary, heard at `seen` and first heard at `since`."""
        self.guid = guid
        self.since = since
        self.last_heartbeat_time = seen
        self.state = state
        self.state_timestamp = state_timestamp

    def _forget_duplicate(self, guid: str) -> None:
        del self.duplicates[guid]  # type: ignore[union-attr]
        if not self.duplicates:
            self.duplicates = None

    def to_view(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "guid": self.guid,
            "state": self.state,
            "state_timestamp": self.state_timestamp,
            "last_heartbeat_time": self.last_heartbeat_time,
            "crash_count": self.crash_count,
            "last_crash_timestamp": self.last_crash_timestamp,
            "crashes_since": self.crashes_since,
            "restart_pending": self.pending_restart is not None,
            "duplicates": sorted(self.duplicates or ()),
        }


def _reverse(guid: str) -> tuple[int, ...]:
    """A sort key ordering guids backwards, so max() picks the smallest on a tie."""
    return tuple(-ord(c) for c in guid)
