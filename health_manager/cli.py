"""The `health_manager` console script: `simulate` runs the simulated foundation, `dump`
prints what a running health manager holds (over its HTTP API); anything else runs the
health manager itself in the foreground (`twistd -n health_manager ...`)."""

import os
import shutil
import sys
import sysconfig


def twistd_command(args):
    """The argv that runs `twistd -n health_manager <args>` with this Python's Twisted."""
    twistd = shutil.which("twistd", path=sysconfig.get_path("scripts"))
    if twistd is None:
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "health_manager", *args]
    return [twistd, "-n", "health_manager", *args]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # Imported here: the simulator installs the asyncio reactor, which the twistd path
        # must choose for itself.
        from health_manager.simulation.runner import main as simulate

        return simulate(argv[1:])
    if argv[:1] == ["dump"]:
        from health_manager.dump import main as dump

        return dump(argv[1:])
    command = twistd_command(argv)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
