"""NothingDurable: the IDurableState of a health manager without `ha` (it keeps nothing).

As in HM 2.0, a restart forgets every crash count and pending restart; with `ha` the
leader keeps them in Redis instead (health_manager/ha/journal.py).
"""

from zope.interface import implementer

from health_manager.interfaces import IDurableState


@implementer(IDurableState)
class NothingDurable:
    def record_crash(self, record):
        pass

    def record_start(self, app_id, version, index):
        pass

    def previous_start(self, app_id, version, index, now):
        return None

    def forget_start(self, app_id, version, index):
        pass

    def write_back_due(self, now):
        return False
