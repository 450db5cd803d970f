"""One instance slot of a droplet: the record kept per (version, index)."""

from health_manager.constants import CRASHED, DOWN, FLAPPING, RUNNING, STARTING

# How many recent STARTING/RUNNING guids a slot remembers (duplicate detection, §5.3).
GUID_STREAM_LENGTH = 3


class AppInstance:
    """State, crash history and guid stream of one (version, index) slot."""

    __slots__ = ("state", "guid", "last_heartbeat_time", "state_timestamp", "crash_count",
                 "last_crash_timestamp", "pending_restart", "guid_stream")

    def __init__(self, now):
        self.state = DOWN
        self.guid = None
        self.last_heartbeat_time = None
        self.state_timestamp = now
        self.crash_count = 0
        self.last_crash_timestamp = None
        self.pending_restart = None
        self.guid_stream = []

    @property
    def starting_or_running(self):
        return self.state == RUNNING or self.state == STARTING

    def receive_heartbeat(self, state, guid, state_timestamp, now):
        """Apply one heartbeat entry; only STARTING/RUNNING entries move the slot (§5.1).
        Returns extra_guid() after it."""
        if state == RUNNING or state == STARTING:
            if guid == self.guid:
                # Keep the one string object already held: the stream then holds one
                # object, not three equal copies, and its comparisons are identity checks.
                guid = self.guid
            stream = self.guid_stream
            stream.append(guid)
            if len(stream) > GUID_STREAM_LENGTH:
                del stream[0]
            self.last_heartbeat_time = now
            self.guid = guid
            self.state = state
            self.state_timestamp = state_timestamp
            # extra_guid()'s common answer without the call: this runs once per entry.
            if len(stream) < GUID_STREAM_LENGTH or stream[0] == stream[1]:
                return None
        elif guid in self.guid_stream:
            self.guid_stream = [g for g in self.guid_stream if g != guid]
        return self.extra_guid()

    def extra_guid(self):
        """The guid to stop when two live guids share this slot (§5.3), else None."""
        stream = self.guid_stream
        if len(stream) < GUID_STREAM_LENGTH or stream[0] == stream[1]:
            return None
        for guid in stream:
            if guid != self.guid:
                return guid
        return None

    def running_guid_count(self):
        """What this slot adds to `running` (§1.5): distinct recent guids when RUNNING."""
        if self.state == RUNNING:
            return len(set(self.guid_stream))
        return 0

    def is_alive(self, now, droplet_lost):
        return (self.state != CRASHED and self.last_heartbeat_time is not None
                and now - self.last_heartbeat_time <= droplet_lost)

    def is_missing(self, now, droplet_lost):
        return self.pending_restart is None and not self.is_alive(now, droplet_lost)

    def mark_down(self, now):
        self.state = DOWN
        self.state_timestamp = now

    def mark_down_for_guid(self, guid, now):
        """Mark the slot DOWN if `guid` is its current instance; True when it was."""
        if self.guid is None or self.guid != guid:
            return False
        self.guid_stream = [g for g in self.guid_stream if g != guid]
        self.mark_down(now)
        return True

    def crash(self, crash_timestamp, flapping_timeout, flapping_death):
        """Count a crash (§5.4): the count restarts after a quiet `flapping_timeout`."""
        if (self.last_crash_timestamp is not None
                and crash_timestamp - self.last_crash_timestamp > flapping_timeout):
            self.crash_count = 0
        self.crash_count += 1
        self.last_crash_timestamp = crash_timestamp
        self.state = FLAPPING if self.crash_count > flapping_death else CRASHED

    def cancel_pending_restart(self):
        """Cancel a scheduled flapping restart; True if one was pending."""
        receipt = self.pending_restart
        if receipt is None:
            return False
        self.pending_restart = None
        receipt.cancel()
        return True

    def to_view(self, index):
        return {
            "index": index,
            "guid": self.guid,
            "state": self.state,
            "state_timestamp": self.state_timestamp,
            "last_heartbeat_time": self.last_heartbeat_time,
            "crash_count": self.crash_count,
            "last_crash_timestamp": self.last_crash_timestamp,
            "restart_pending": self.pending_restart is not None,
        }
