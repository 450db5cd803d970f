"""Integration: `health_manager dump` reads a running health manager (a simulated
foundation in this process) over HTTP, as a separate process."""

import os
import sys

import orjson
import yaml
from twisted.internet import utils
from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import free_port
from spec.integration.simulated import PASSWORD, USER, SimulatedFoundation


class DumpTests(TestCase):
    timeout = 60

    async def dump(self, *args):
        from twisted.internet import reactor

        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "health_manager.cli", "dump", *args],
            env=dict(os.environ), reactor=reactor)
        return out.decode(), err.decode(), code

    async def test_dump_against_simulated_foundation(self):
        """dump prints the summary and a table with the unhealthy apps first and their
        reasons; --json gives the API's JSON; --app GUID one app per instance; -c finds
        the URL and credentials in a config file."""
        from twisted.internet import reactor

        sim = await SimulatedFoundation(self, reactor).start()
        await sim.settled()
        creds = ["--user", USER, "--password", PASSWORD]
        out, err, code = await self.dump("--url", sim.url, *creds)
        self.assertEqual((code, err), (0, ""), out)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("health manager: role single, NATS connected"),
                        out)
        rows = [line for line in lines if line.startswith("app-")]
        self.assertEqual(len(rows), 12, out)
        health = [row.split()[1] for row in rows]
        self.assertIn("UNHEALTHY", health, out)
        self.assertEqual(health, sorted(health, key=lambda h: h != "UNHEALTHY"), out)
        flapping = sorted(sim.foundation.flapping_apps)
        self.assertIn(flapping[0], out)

        out, err, code = await self.dump("--url", sim.url, *creds, "--json")
        body = orjson.loads(out)
        self.assertEqual(len(body["apps"]), 12)
        self.assertEqual(body["summary"]["ha_role"], "single")

        out, err, code = await self.dump("--url", sim.url, *creds, "--app", flapping[0])
        self.assertEqual(code, 0, err)
        self.assertIn(f"app {flapping[0]}: STARTED STAGED", out)
        [header] = [line for line in out.splitlines() if line.startswith("VERSION ")]
        reason_at = header.index("REASON")
        slots = [(line.split()[1], line.split()[2], line[reason_at:].strip())
                 for line in out.splitlines() if line.startswith(f"{flapping[0]}-v1 ")]
        self.assertEqual([int(index) for index, _, _ in slots], [0, 1, 2], out)
        for _index, state, reason in slots:
            # Every instance not running says why the HM is not starting it right now.
            self.assertEqual(state in ("RUNNING", "STARTING"), reason == "", out)

        config = self.mktemp()
        with open(config, "w") as f:
            yaml.safe_dump({"mbus": sim.nats.url, "bulk_api": {"host": "http://127.0.0.1:1"},
                            "status": {"port": sim.manager.status_server.port,
                                       "user": USER, "password": PASSWORD}}, f)
        out, err, code = await self.dump("-c", config)
        self.assertEqual(code, 0, err)
        self.assertIn("apps unhealthy", out)

    async def test_unreachable(self):
        """With nothing listening, dump exits 1 with one line saying why."""
        url = f"http://127.0.0.1:{free_port()}"
        out, err, code = await self.dump("--url", url, "--user", "u", "--password", "p")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(f"cannot reach the health manager at {url}: Connection refused", err)

    async def test_config_without_credentials(self):
        """A config without status credentials (generated at start) asks for the flags."""
        config = self.mktemp()
        with open(config, "w") as f:
            yaml.safe_dump({"mbus": "nats://127.0.0.1:4222",
                            "bulk_api": {"host": "http://127.0.0.1:1"},
                            "status": {"port": 8080}}, f)
        out, err, code = await self.dump("-c", config)
        self.assertEqual(code, 1)
        self.assertIn("pass --user and --password", err)
