"""A hand-written IDesiredState for policy unit tests: settable state, recorded refreshes."""

from twisted.internet.defer import succeed
from zope.interface import implementer

from health_manager.interfaces import IDesiredState


@implementer(IDesiredState)
class FakeDesiredState:
    """Desired state whose availability and freshness the test sets directly.

    `refresh()` only counts the call (`refresh_calls`) and fires at once; the test feeds
    apps into the policy itself.
    """

    def __init__(self, available=True, fresh=True, last_success=None):
        self.available = available
        self.fresh = fresh
        self.last_success = last_success
        self.refresh_calls = 0

    def is_fresh(self):
        return self.available and self.fresh

    def refresh(self):
        self.refresh_calls += 1
        return succeed(None)
