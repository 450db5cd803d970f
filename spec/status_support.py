"""A StateView over real model objects and fakes, for the status server's tests."""

from health_manager.freshness import ActualFreshness
from health_manager.leadership import SingleLeadership
from health_manager.metrics import Metrics
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.desired import FakeDesiredState
from health_manager.web.state_view import StateView


class ConnectedBy:
    """A bus stand-in whose `connected` is whatever `connected()` says."""

    def __init__(self, connected):
        self._connected = connected

    @property
    def connected(self):
        return self._connected()


def make_view(config, clock, metrics, connected, desired=None):
    """(view, desired) where `connected()` decides the NATS state."""
    scheduler = Scheduler(clock)
    if desired is None:
        desired = FakeDesiredState(last_success=clock.seconds())
    view = StateView(config, scheduler, DropletRegistry(), metrics, desired,
                     ActualFreshness(scheduler, 30), SingleLeadership(),
                     ConnectedBy(connected),
                     Nudger(scheduler, InMemoryBus(clock), Metrics(), 40, 1), clock.seconds())
    return view, desired
