"""The Manager's garbage-collection policy, on a fake collector."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.gc_policy import GcPolicy


class FakeCollector:
    def __init__(self):
        self.callbacks = []
        self.frozen = 0
        self.young = 0
        self.calls = []

    def freeze(self):
        self.calls.append("freeze")
        self.frozen += self.young
        self.young = 0

    def unfreeze(self):
        self.calls.append("unfreeze")
        self.young += self.frozen
        self.frozen = 0

    def collect(self):
        self.calls.append("collect")
        return 7

    def get_freeze_count(self):
        return self.frozen


class GcPolicyTests(SynchronousTestCase):
    def setUp(self):
        self.gc = FakeCollector()
        self.policy = GcPolicy(self.gc)

    def test_freezes_survivors_of_older_collections_only(self):
        """Once installed, a generation-1 or -2 collection freezes its survivors; a
        generation-0 collection does not; uninstall stops it."""
        self.policy.install()
        self.policy.install()
        self.assertEqual(len(self.gc.callbacks), 1)
        callback = self.gc.callbacks[0]
        callback("stop", {"generation": 0})
        callback("start", {"generation": 1})
        self.assertEqual(self.gc.calls, [])
        callback("stop", {"generation": 1})
        callback("stop", {"generation": 2})
        self.assertEqual(self.gc.calls, ["freeze", "freeze"])
        self.policy.uninstall()
        self.assertEqual(self.gc.callbacks, [])

    def test_sweep_after_a_quarter_of_growth(self):
        """The first sweep takes the baseline; a full collection runs only once the frozen
        set grew by 25 %, then the baseline moves."""
        self.gc.frozen = 1000
        self.assertIsNone(self.policy.sweep())
        self.gc.frozen = 1249
        self.assertIsNone(self.policy.sweep())
        self.assertEqual(self.gc.calls, [])
        self.gc.frozen = 1250
        self.assertEqual(self.policy.sweep(), 7)
        self.assertEqual(self.gc.calls, ["unfreeze", "collect", "freeze"])
        self.assertIsNone(self.policy.sweep())
