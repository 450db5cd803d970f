"""Resilience against NATS outages (issue 6, items 1 and 2), with a real nats-server, the
fake Cloud Controller and simulated DEAs, asserting on the health.start / health.stop
messages actually seen on the wire.
"""

import re
import signal
import time

import orjson
from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import free_port
from spec.integration.support import LiveFoundation, LogCapture, sleep, wait_until

APPS = {"app-a": 2, "app-b": 3, "app-c": 1}


class NatsOutageTests(TestCase):
    timeout = 60

    async def test_outage_causes_no_action_and_missing_instance_still_started(self):
        """nats-server killed and restarted while apps are healthy: the health manager logs
        its reconnect attempts, sends no start or stop because of the outage, and after it
        still starts an instance that is genuinely missing (and did so before it too)."""
        logs = LogCapture()
        self.addCleanup(logs.stop)
        foundation = await LiveFoundation(self).start()
        for guid, instances in APPS.items():
            foundation.place(guid, instances)
        manager = await foundation.start_manager()
        await wait_until(lambda: manager.desired_state.is_fresh()
                         and manager.freshness.is_fresh(), what="fresh state")
        await sleep(1.5)
        self.assertEqual((foundation.starts(), foundation.stops()), ([], []))

        # The recorder can see a start at all: a genuinely missing instance, before.
        killed = [foundation.kill_instance("app-b", 1)]
        await wait_until(lambda: foundation.starts(), what="start for app-b[1]")
        self.assertEqual([(s["droplet"], s["indices"]) for s in foundation.starts()],
                         [("app-b", [1])])
        await wait_until(lambda: foundation.running_indices("app-b") == [0, 1, 2],
                         what="app-b healed")
        # HM 2.0's guid stream stopped the vanished guid once the replacement had
        # heartbeated twice (§5.3); here the replacement simply takes the slot over.
        await sleep(1)
        self.assertEqual(foundation.stops(), [])
        sent_before = (manager.metrics.health_start_messages_sent,
                       manager.metrics.health_stop_messages_sent)

        outage_began = time.monotonic()
        foundation.nats.kill()
        await wait_until(lambda: not manager.bus.connected, what="disconnect seen")
        await sleep(5)  # longer than droplet_lost: every instance looks vanished
        foundation.nats.start()
        restarted = time.monotonic()
        reconnect = await wait_until(lambda: manager.bus.connected, what="reconnect")
        await wait_until(lambda: foundation.bus.connected, what="foundation reconnect")
        await sleep(5)  # freshness window, analyses, request-queue drains

        self.assertEqual((foundation.starts(outage_began), foundation.stops(outage_began)),
                         ([], []))
        self.assertEqual((manager.metrics.health_start_messages_sent,
                          manager.metrics.health_stop_messages_sent), sent_before)
        self.assertGreaterEqual(logs.count("NATS disconnected"), 1)
        # The outage is logged when it begins and ends, not per attempt (a reminder would
        # come only after a minute).
        self.assertEqual(logs.count("NATS unreachable") + logs.count("still unreachable"), 0,
                         logs.text())
        ended = re.search(r"NATS connected to \S+ after \d+ s and (\d+) failed attempts",
                          logs.text())
        self.assertIsNotNone(ended, logs.text())
        attempts = int(ended.group(1))
        self.assertGreaterEqual(attempts, 1, logs.text())
        self.assertNotIn("mbus-Pa55-never-shown", logs.text())

        # A genuinely missing instance after the outage is still started.
        after = time.monotonic()
        killed.append(foundation.kill_instance("app-a", 0))
        await wait_until(lambda: foundation.starts(after), what="start for app-a[0]")
        self.assertEqual([(s["droplet"], s["indices"], s["running"])
                          for s in foundation.starts(after)],
                         [("app-a", [0], {"app-a-v1": 1})])
        await wait_until(lambda: foundation.running_indices("app-a") == [0, 1],
                         what="app-a healed")
        stopped = [guid for stop in foundation.stops() for guid in stop["instances"]]
        self.assertLessEqual(set(stopped), set(killed))
        print(f"\nreconnected {reconnect:.2f} s after nats-server restart "
              f"(outage {restarted - outage_began:.1f} s, {attempts} attempts logged)")


class NatsUnreachableAtStartTests(TestCase):
    timeout = 60

    async def test_starts_without_nats_then_works(self):
        """NATS unreachable at start: the process stays up, logs its attempts, /healthz
        says NATS is disconnected; once NATS appears it connects and starts a missing
        instance."""
        foundation = LiveFoundation(self, nats_port=free_port(), start_nats=False)
        await foundation.start()
        hm = foundation.start_child()
        await wait_until(lambda: "status server listening" in hm.output(), what="listening")
        for _ in range(3):
            code, body = await foundation.status_get(hm.status_port, "/healthz?format=json")
            self.assertEqual((code, orjson.loads(body)["nats"]), (503, "disconnected"))
            await sleep(1)
        self.assertIsNone(hm.process.poll(), hm.output())
        # One line when NATS turned out unreachable, none per retry.
        self.assertEqual(hm.output().count("NATS unreachable at"), 1, hm.output())
        self.assertIn("waiting for NATS", hm.output())
        self.assertNotIn("health manager started", hm.output())

        foundation.nats.start()
        appeared = time.monotonic()
        await wait_until(lambda: foundation.bus.connected, what="foundation connected")
        foundation.place("app-late", 2, running=1)
        while (await foundation.status_get(hm.status_port, "/healthz"))[0] != 200:
            self.assertLess(time.monotonic() - appeared, 20, hm.output())
            await sleep(0.1)
        connected = time.monotonic() - appeared
        self.assertIn("NATS connected to nats://nats:***@", hm.output())
        await wait_until(lambda: foundation.starts(), timeout=20, what="start for app-late")
        self.assertEqual([(s["droplet"], s["indices"]) for s in foundation.starts()],
                         [("app-late", [1])])
        self.assertNotIn("mbus-Pa55-never-shown", hm.output())
        hm.process.send_signal(signal.SIGTERM)
        self.assertIn(hm.process.wait(timeout=10), (0, -signal.SIGTERM))
        print(f"\nconnected and healthy {connected:.2f} s after NATS appeared")
