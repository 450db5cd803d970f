"""`simulate --ha N --kill-leader-every SECONDS`: the options and their checks."""

import io
from contextlib import redirect_stderr

from twisted.trial.unittest import SynchronousTestCase


class SimulateHaOptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        from health_manager.simulation.runner import parse_args

        return parse_args(list(argv))

    def test_off_by_default(self):
        """Without --ha the simulation runs one in-process HM and kills no leader."""
        args = self.parse()
        self.assertEqual((args.ha, args.kill_leader_every, args.json_summary), (0, 0, False))

    def test_ha_options_read(self):
        """--ha 3 --kill-leader-every 8 --json-summary are read as given."""
        args = self.parse("--ha", "3", "--kill-leader-every", "8", "--json-summary")
        self.assertEqual((args.ha, args.kill_leader_every, args.json_summary), (3, 8.0, True))

    def test_etcd_members_read(self):
        """--ha-etcd 3 puts the lease on an etcd cluster of 3 members; 0 (Redis) by
        default."""
        self.assertEqual(self.parse("--ha", "2").ha_etcd, 0)
        self.assertEqual(self.parse("--ha", "2", "--ha-etcd", "3").ha_etcd, 3)

    def test_bad_combinations_rejected(self):
        """One HA member, a negative period, or killing leaders without --ha are errors."""
        for argv in (["--ha", "1"], ["--ha", "-2"], ["--ha", "3", "--kill-leader-every", "-1"],
                     ["--kill-leader-every", "5"], ["--ha-etcd", "3"],
                     ["--ha", "3", "--ha-etcd", "-1"]):
            with redirect_stderr(io.StringIO()):
                self.assertRaises(SystemExit, self.parse, *argv)
