"""GcPolicy: CPython's full garbage collections kept off the reactor."""

import gc

from twisted.logger import Logger


class GcPolicy:
    """Keeps CPython's full garbage collections off the reactor.

    A full (generation 2) collection walks every tracked object: 70-110 ms for a 100k-250k
    app foundation, and CPython runs one each time that heap grew by 25 %, so a desired
    load or a first heartbeat round stalled the reactor. The model holds no reference
    cycles, so walking it finds nothing. Once installed, every object that survived a
    generation-1 collection (so two young collections) is frozen at once (gc.freeze,
    O(1)): full collections then have next to nothing to walk, and CPython's own trigger
    never fires. Frozen objects are still freed by reference counting; only cyclic garbage
    that died after being frozen stays. `sweep()` bounds it by CPython's own rule: when the
    frozen set grew by 25 % since the last sweep, one full collection runs at that chosen
    moment (the droplet GC interval) instead of in the middle of a load. The first sweep
    only takes the baseline: the initial load is growth, not garbage, and a full collection
    of a 100k-app heap blocks for about 120 ms.
    """

    log = Logger()
    GROWTH = 0.25

    def __init__(self, collector=gc):
        self._gc = collector
        self._swept_size = None
        self.installed = False

    def install(self):
        if not self.installed:
            self.installed = True
            self._gc.callbacks.append(self._on_collection)

    def uninstall(self):
        if self.installed:
            self.installed = False
            self._gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase, info):
        if phase == "stop" and info["generation"] >= 1:
            self._gc.freeze()

    def sweep(self):
        """full_sweep() if the frozen set grew by GROWTH since the last one (the first call
        takes the baseline); returns what full_sweep() found, or None when skipped."""
        frozen = self._gc.get_freeze_count()
        if self._swept_size is None:
            self._swept_size = frozen
        if frozen < (1 + self.GROWTH) * self._swept_size:
            return None
        return self.full_sweep()

    def full_sweep(self):
        """Unfreeze, run one full collection, freeze again; returns the number of
        unreachable objects found (the cyclic garbage the freezing kept)."""
        frozen = self._gc.get_freeze_count()
        self._gc.unfreeze()
        found = self._gc.collect()
        self._gc.freeze()
        self._swept_size = self._gc.get_freeze_count()
        self.log.info("python GC sweep: {found} unreachable of {frozen} frozen objects",
                      found=found, frozen=frozen)
        return found
