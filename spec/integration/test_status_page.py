"""Integration: the status page in a real headless browser (Debian's chromium) against a
simulated foundation: what it shows, and a screenshot (status_page.png in trial's working
directory, its path printed)."""

import functools
import os
import re
import shutil
import sys

from twisted.internet import utils
from twisted.trial.unittest import SkipTest, TestCase

from spec.integration.browser import browser_argv, ensure_browser, new_profile
from spec.integration.simulated import PASSWORD, USER, SimulatedFoundation



@functools.cache
def _browser():
    return ensure_browser()


class StatusPageBrowserTests(TestCase):
    timeout = 180  # the first run may install chromium

    def setUp(self):
        # Looked for (and installed) once per run, not once per test.
        self.browser, reason = _browser()
        if self.browser is None:
            sys.stderr.write(f"\nstatus page browser test skipped: {reason}\n")
            raise SkipTest(reason)

    async def run_browser(self, *args):
        from twisted.internet import reactor

        profile = new_profile()
        self.addCleanup(shutil.rmtree, profile, True)
        # Spawned, not run: this process serves the page while the browser loads it.
        out, err, code = await utils.getProcessOutputAndValue(
            self.browser, browser_argv(self.browser, profile, *args)[1:],
            env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        return out.decode(errors="replace")

    async def test_page_shows_summary_and_unhealthy_apps_first(self):
        """The page shows the foundation summary, then the unhealthy apps (with reasons)
        before the healthy ones, has no external asset, refreshes itself; a screenshot is
        saved."""
        from twisted.internet import reactor

        sim = await SimulatedFoundation(self, reactor).start()
        await sim.settled()
        port = sim.manager.status_server.port
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/"
        dom = await self.run_browser("--dump-dom", url)

        self.assertIn("<title>health_manager status</title>", dom)
        self.assertRegex(dom, r'http-equiv="refresh" content="\d+"')
        self.assertIsNone(re.search(r'(src|href)="(https?:)?//', dom), "external asset")
        summary = dict(re.findall(r'<td id="summary-([\w-]+)">(.*?)</td>', dom))
        self.assertIn("connected", summary["NATS"])
        self.assertEqual(summary["HA-role"], "single")
        self.assertEqual(summary["apps"], "12")
        self.assertIn("fresh", summary["desired-state"])
        self.assertRegex(summary["running"], r"^\d+$")
        unhealthy_at = dom.index('<table id="unhealthy">')
        healthy_at = dom.find('id="healthy"')
        self.assertLess(unhealthy_at, healthy_at)
        unhealthy = dom[unhealthy_at:healthy_at]
        flapping = sorted(sim.foundation.flapping_apps)
        for guid in flapping:
            self.assertIn(f"<td>{guid}</td>", unhealthy)
        reasons = re.findall(r'<td class="reason">(.*?)</td>', unhealthy)
        self.assertTrue(reasons)
        for reason in reasons:
            self.assertRegex(reason, r"^(index \d+: .+|extra instances: .+)$")

        screenshot = os.path.abspath("status_page.png")
        await self.run_browser(f"--screenshot={screenshot}", "--window-size=1280,1100", url)
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        sys.stderr.write(f"\nstatus page screenshot: {screenshot}\n")

    async def test_page_needs_credentials(self):
        """Without the status credentials the browser gets 401, not the page."""
        from twisted.internet import reactor

        sim = await SimulatedFoundation(self, reactor, apps=2).start()
        dom = await self.run_browser("--dump-dom",
                                     f"http://127.0.0.1:{sim.manager.status_server.port}/")
        self.assertNotIn("health_manager status", dom)
