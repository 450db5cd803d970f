"""A standby promoted to leader does not repeat the old leader's recent work."""

from twisted.trial.unittest import SynchronousTestCase

from spec.unit.policy_rig import PolicyRig
from spec.unit.test_nudger_gate import SwitchedLeadership


class TakeoverTests(SynchronousTestCase):
    def setUp(self):
        self.leadership = SwitchedLeadership(acting=False)
        self.rig = PolicyRig(leadership=self.leadership)
        rig = self.rig
        rig.desire(instances=2)
        rig.advance(rig.intervals.droplet_lost + 1)  # the actual state is fresh
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1))

    def crash_then_promote(self):
        rig = self.rig
        rig.exited("g1", 1)  # the old leader restarts it; this standby only records it
        rig.advance(2)
        self.leadership.acting = True  # the old leader died: promoted
        self.assertEqual(rig.starts(), [])

    def test_recent_crash_not_restarted_again(self):
        """A crash seen as standby gets no start from the new leader while the old
        leader's replacement comes up (it heartbeats within droplet_lost)."""
        rig = self.rig
        self.crash_then_promote()
        for _ in range(5):
            rig.advance(5)
            rig.heartbeat(rig.beat("g0", 0), rig.beat("g1-new", 1))
            rig.analyze()
        self.assertEqual(rig.starts(), [])

    def test_still_missing_after_grace_started_once(self):
        """An index still missing droplet_lost after the crash is started, exactly once."""
        rig = self.rig
        self.crash_then_promote()
        for _ in range(int(rig.intervals.droplet_lost / 5) + 4):
            rig.advance(5)
            rig.heartbeat(rig.beat("g0", 0))
            rig.analyze()
            rig.nudger.drain()
        self.assertEqual([s["indices"] for s in rig.starts()], [[1]])

    def test_long_missing_index_started_at_promotion(self):
        """An index missing for long (the old leader failed to start it) is started at the
        first analysis after promotion, not a droplet_lost later."""
        rig = self.rig
        for _ in range(int(3 * rig.intervals.droplet_lost / 5)):
            rig.advance(5)
            rig.heartbeat(rig.beat("g0", 0))  # index 1 stays missing
            rig.analyze()
        self.assertEqual(rig.starts(), [])
        self.leadership.acting = True
        rig.analyze()
        self.assertEqual([s["indices"] for s in rig.starts()], [[1]])
