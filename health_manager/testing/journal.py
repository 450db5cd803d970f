"""In-memory stand-ins for the HA journal's store and lease, for unit tests on task.Clock.

InMemoryJournalStore keeps Redis's semantics that matter to the journal: entries expire
after their TTL, a write lands only while its epoch is the stored one (the fence), and the
store can be taken down (every call fails at once) or emptied (FLUSHALL).
"""

from twisted.internet import defer
from zope.interface import implementer

from health_manager.ha.journal import IJournalStore
from health_manager.ha.lease import LEADER, STANDBY, LeaseUnavailable


@implementer(IJournalStore)
class InMemoryJournalStore:
    address = "memory"

    def __init__(self, clock):
        self._clock = clock
        self.epoch = 0  # the stored fencing epoch, as the lease's acquire sets it
        self.connected = True
        self.entries = {}  # (kind, key) -> (value, expires at)
        self.writes = []  # (epoch, number of entries, written) per call

    def write(self, epoch, entries):
        if not self.connected:
            return defer.fail(LeaseUnavailable("memory store down"))
        written = epoch == self.epoch
        self.writes.append((epoch, len(entries), written))
        if written:
            now = self._clock.seconds()
            for kind, key, value, ttl_ms in entries:
                self.entries[(kind, key)] = (value, now + ttl_ms / 1000)
        return defer.succeed(written)

    async def load(self, kind):
        if not self.connected:
            raise LeaseUnavailable("memory store down")
        return [value for (k, _), value in self.live().items() if k == kind]

    def live(self):
        """{(kind, key): value} of the entries not expired."""
        now = self._clock.seconds()
        return {key: value for key, (value, expires) in self.entries.items()
                if expires > now}

    def flushall(self):
        self.entries.clear()
        self.epoch = 0


class FakeLease:
    """The part of Lease the journal and the handover use, switched by hand."""

    def __init__(self, store):
        self._store = store
        self.role = STANDBY
        self.leader_id = "hm-other"
        self.epoch = None
        self.transitions = 0
        self._listeners = []

    def add_listener(self, callback):
        self._listeners.append(callback)

    def is_acting(self):
        return self.role == LEADER

    def promote(self):
        """Win the lease with the next epoch, as ACQUIRE does."""
        self._store.epoch += 1
        self.epoch = self._store.epoch
        self._change(LEADER, "hm-self")

    def depose(self):
        self._change(STANDBY, "hm-other")

    def _change(self, role, leader):
        self.role, self.leader_id = role, leader
        self.transitions += 1
        for callback in self._listeners:
            callback()
