"""Several HMs' Leases on one task.Clock, each over its own store (or one shared), for the
lease tests of every backend."""

from health_manager.ha.lease import Lease


class LeaseRig:
    def __init__(self, clock, stores, lease, deadline, retry):
        """HM n is `hm-n`, its Lease over `stores[n]`."""
        self.clock = clock
        self._retry = retry
        self.leases = [Lease(store, clock, f"hm-{n}", lease, deadline, retry,
                             monotonic=clock.seconds) for n, store in enumerate(stores)]

    def start(self):
        """Start every lease and run their first try (one retry period later)."""
        for lease in self.leases:
            lease.start()
        self.clock.advance(self._retry)

    def advance(self, seconds, step=0.25):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def acting(self):
        return [lease for lease in self.leases if lease.is_acting()]

    def acting_ids(self):
        return [lease.holder_id for lease in self.acting()]
