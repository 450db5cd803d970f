"""The simulate view: ANSI redraw on a terminal, periodic plain lines otherwise, summary."""

import io

from twisted.trial.unittest import SynchronousTestCase

from health_manager.simulation.foundation import Snapshot
from health_manager.simulation.view import CLEAR, Progress, View, plural


def snapshot(at, running=10, heartbeats=0):
    return Snapshot(at=at, apps=5, flapping_apps=1, desired=10, running=running, starting=0,
                    crashed=1, extra=0, deas_active=3, crashes=2, heartbeats_sent=heartbeats,
                    starts_accepted=3, starts_refused=1, stops_accepted=0, stops_refused=0)


PROGRESS = Progress(elapsed=4, duration=20, phase="chaos")


class ViewTests(SynchronousTestCase):
    def test_tty_redraws(self):
        """On a terminal every update clears the screen and draws the panel."""
        out = io.StringIO()
        view = View(out, tty=True)
        view.update(snapshot(1), PROGRESS)
        view.update(snapshot(1.5), PROGRESS)
        self.assertEqual(out.getvalue().count(CLEAR), 2)
        self.assertIn("10/10 running  (HEALTHY)", out.getvalue())

    def test_plain_lines_are_periodic(self):
        """Without a terminal one plain line is written per period, no escapes."""
        out = io.StringIO()
        view = View(out, tty=False, plain_period=2)
        for at in (0, 0.5, 1, 1.5, 2, 2.5):
            view.update(snapshot(at), PROGRESS)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertNotIn("\x1b", out.getvalue())
        self.assertIn("running 10/10 missing 0", lines[0])

    def test_heartbeat_rate(self):
        """The heartbeat rate is counted over a few seconds, not between two updates."""
        out = io.StringIO()
        view = View(out, tty=False, plain_period=0)
        for n in range(8):
            view.update(snapshot(n * 0.5, heartbeats=n // 2 * 3), PROGRESS)
        self.assertIn("hb/s 3.0", out.getvalue().splitlines()[-1])

    def test_summary_verdict(self):
        """The summary says HEALED only when no desired instance is missing."""
        out = io.StringIO()
        View(out, tty=False).summary(snapshot(5), PROGRESS)
        View(out, tty=False).summary(snapshot(5, running=7), PROGRESS)
        text = out.getvalue()
        self.assertIn("HEALED: every desired instance is running", text)
        self.assertIn("NOT HEALED: 3 desired instances still missing", text)

    def test_summary_gives_the_time_to_heal_and_a_legend(self):
        """A healed run's summary says how long healing took after the faults stopped, and
        explains "crashed kept", "extra" and "refused"."""
        out = io.StringIO()
        progress = Progress(elapsed=30, duration=40, phase="settling", heal_time=4.5)
        View(out, tty=False).summary(snapshot(30), progress)
        text = out.getvalue()
        self.assertIn("time to heal: 4.5 s after the faults stopped", text)
        for term in ("crashed kept:", "extra:", "refused:"):
            self.assertIn(term, text)

    def test_messages_named_as_the_contract_spoken(self):
        """The health manager's starts and stops go by the contract's subjects."""
        out = io.StringIO()
        progress = Progress(elapsed=30, duration=40, phase="settling", hm_starts_sent=3,
                            hm_stops_sent=1, start_subject="hm9000.start",
                            stop_subject="hm9000.stop")
        View(out, tty=False).summary(snapshot(30), progress)
        self.assertIn("health manager sent: 3 hm9000.start, 1 hm9000.stop", out.getvalue())
        self.assertNotIn("HTTPS heartbeats", out.getvalue())

    def test_https_heartbeats_counted_when_sent(self):
        out = io.StringIO()
        progress = Progress(elapsed=30, duration=40, phase="settling",
                            https_heartbeats=(40, 1, 2))
        View(out, tty=False).summary(snapshot(30), progress)
        self.assertIn("HTTPS heartbeats: 40 accepted (202), 1 refused, 2 failed",
                      out.getvalue())

    def test_interrupted_run_is_not_judged(self):
        """An interrupted run says so instead of NOT HEALED."""
        out = io.StringIO()
        progress = Progress(elapsed=3, duration=40, phase="interrupted")
        View(out, tty=False).summary(snapshot(3, running=7), progress)
        self.assertIn("INTERRUPTED before the faults ended: not judged", out.getvalue())
        self.assertNotIn("NOT HEALED", out.getvalue())

    def test_plurals(self):
        """Counts read right: 1 DEA evacuation, 2 DEA evacuations, 1 crash, 0 crashes."""
        self.assertEqual([plural(1, "DEA evacuation"), plural(2, "DEA evacuation"),
                          plural(1, "crash", "crashes"), plural(0, "crash", "crashes")],
                         ["1 DEA evacuation", "2 DEA evacuations", "1 crash", "0 crashes"])
