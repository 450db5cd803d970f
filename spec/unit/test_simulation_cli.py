"""The `health_manager` command line: simulate options, and the twistd path."""

import io
from contextlib import redirect_stderr

from twisted.trial.unittest import SynchronousTestCase

from health_manager.cli import twistd_command


class TwistdCommandTests(SynchronousTestCase):
    def test_other_arguments_go_to_twistd(self):
        """Anything but `simulate` runs `twistd -n health_manager <args>`."""
        command = twistd_command(["-c", "config/health_manager.yml"])
        self.assertEqual(command[-4:], ["-n", "health_manager", "-c", "config/health_manager.yml"])


class SimulateOptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        # Imported here, as cli.main does: the runner module imports the whole manager.
        from health_manager.simulation.runner import parse_args

        return parse_args(list(argv))

    def test_defaults(self):
        """Without options the demo scenario is 20 apps of 3 instances for 40 s."""
        args = self.parse()
        self.assertEqual((args.apps, args.instances, args.duration, args.plain),
                         (20, 3, 40, False))

    def test_bad_values_rejected(self):
        """Fractions outside 0..1, counts below 1 and crashy+flapping above 1 are usage errors."""
        for argv in (["--crashy", "1.5"], ["--apps", "0"], ["--crashy", "0.6", "--flapping",
                                                           "0.6"], ["--duration", "0"],
                     ["--grace", "-1"]):
            with redirect_stderr(io.StringIO()):
                self.assertRaises(SystemExit, self.parse, *argv)

    def test_seed_chosen_and_rerun_command_reproduces_the_run(self):
        """Without --seed a seed is chosen; the rerun command parses back to the same run."""
        from health_manager.simulation.runner import rerun_command

        args = self.parse("--apps", "7", "--no-evacuation")
        self.assertIsInstance(args.seed, int)
        words = rerun_command(args).split()
        self.assertEqual(words[:2], ["health_manager", "simulate"])
        again = self.parse(*words[2:])
        self.assertEqual(vars(again), vars(args))

    def test_cc_protocol(self):
        """--cc-protocol is hm2 by default, hm9000 on request (kept by the rerun command),
        anything else or with --ha a usage error."""
        from health_manager.simulation.runner import rerun_command

        self.assertEqual(self.parse().cc_protocol, "hm2")
        args = self.parse("--cc-protocol", "hm9000")
        self.assertEqual(vars(self.parse(*rerun_command(args).split()[2:])), vars(args))
        for argv in (["--cc-protocol", "hm3"], ["--cc-protocol", "hm9000", "--ha", "2"]):
            with redirect_stderr(io.StringIO()):
                self.assertRaises(SystemExit, self.parse, *argv)

    def test_evacuation_plan(self):
        """hm2: one Nov 2013 evacuation mid-chaos; hm9000: one as DEAs did it until Jun
        2016, then one as after."""
        from health_manager.simulation.foundation import (
            EVACUATE_BY_EXITS,
            EVACUATE_BY_EXITS_AND_HEARTBEATS,
            EVACUATE_BY_HEARTBEATS,
        )
        from health_manager.simulation.runner import evacuation_plan

        self.assertEqual(evacuation_plan("hm2", 24), [(12, EVACUATE_BY_EXITS)])
        self.assertEqual(evacuation_plan("hm9000", 24), [
            (8, EVACUATE_BY_EXITS_AND_HEARTBEATS), (16, EVACUATE_BY_HEARTBEATS)])
