"""SingleLeadership: a lone health manager always acts."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from health_manager.interfaces import ILeadership
from health_manager.leadership import SingleLeadership


class SingleLeadershipTests(SynchronousTestCase):
    def test_provides_interface(self):
        """SingleLeadership provides ILeadership."""
        verifyObject(ILeadership, SingleLeadership())

    def test_always_acting_as_single(self):
        """A lone HM acts, reports role 'single', and has no epoch or transitions."""
        leadership = SingleLeadership()
        self.assertTrue(leadership.is_acting())
        self.assertEqual((leadership.role, leadership.epoch, leadership.transitions),
                         ("single", None, 0))
