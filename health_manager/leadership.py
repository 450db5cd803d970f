"""SingleLeadership: the ILeadership of a health manager that runs alone (no `ha` section)."""

from zope.interface import implementer

from health_manager.interfaces import ILeadership

SINGLE = "single"


@implementer(ILeadership)
class SingleLeadership:
    """Always acting, as HM 2.0 was: there is no one else to defer to."""

    role = SINGLE
    leader_id = None
    epoch = None
    transitions = 0

    def is_acting(self):
        return True
