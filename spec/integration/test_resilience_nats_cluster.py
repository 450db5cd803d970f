"""The health manager on a NATS cluster of three real nats-servers (issue 20, part 3): the
member it is on is killed, it goes on through another within seconds, keeps healing, sends
no start or stop twice or not at all because of the switch, and /varz, /metrics and its
log say which member it is on.

The fake Cloud Controller, the DEAs and the recorder of health.start / health.stop are on
member A, which stays up; the HM's `mbus` lists B and C, and it may also move to A, which
the cluster announces to it.
"""

import re
import time
from urllib.parse import urlsplit

import orjson
from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import NatsCluster
from spec.integration.support import (
    MBUS_PASSWORD,
    MBUS_USER,
    LiveFoundation,
    LogCapture,
    sleep,
    wait_until,
)

APPS = {"app-a": 2, "app-b": 2}


class NatsClusterFailoverTests(TestCase):
    timeout = 60

    async def test_member_killed_under_the_hm(self):
        logs = LogCapture()
        self.addCleanup(logs.stop)
        cluster = NatsCluster(3, user=MBUS_USER, password=MBUS_PASSWORD)
        self.addCleanup(cluster.stop)
        cluster.start()
        on_a, on_b, on_c = cluster.servers
        foundation = await LiveFoundation(self, nats=on_a).start()
        for guid, instances in APPS.items():
            foundation.place(guid, instances)
        manager = await foundation.start_manager(mbus=f"{on_b.url},{on_c.url}")
        await wait_until(lambda: manager.desired_state.is_fresh()
                         and manager.freshness.is_fresh(), what="fresh state")
        first = cluster.member_on(urlsplit(manager.bus.server).port)
        self.assertIn(first, (on_b, on_c))
        self.assertEqual(await self.nats_server_shown(foundation, manager), manager.bus.server)
        self.assertIn(f"NATS connected to nats://{MBUS_USER}:***@127.0.0.1:{first.port}",
                      logs.text())
        self.assertEqual((foundation.starts(), foundation.stops()), ([], []))

        # The member dies; an instance crashes right after. Its droplet.exited may be lost
        # (the HM is on no member for a moment), its heartbeats then tell: one start either way.
        killed_at = time.monotonic()
        first.kill()
        dea, instance = foundation.instance("app-b", 1)
        dea.crash(instance.guid)
        reconnect = await wait_until(lambda: manager.bus.connected
                                     and manager.bus.reconnects == 1, timeout=5,
                                     what="HM on another member")
        second = manager.bus.server
        self.assertNotEqual(urlsplit(second).port, first.port)
        await wait_until(lambda: foundation.running_indices("app-b") == [0, 1], timeout=20,
                         what="app-b healed")
        healed = time.monotonic() - killed_at
        await sleep(3)  # longer than droplet_lost: a doubled start would show by now
        self.assertEqual([(s["droplet"], s["indices"]) for s in foundation.starts(killed_at)],
                         [("app-b", [1])])
        self.assertEqual(foundation.stops(killed_at), [])
        self.assertEqual(manager.metrics.health_start_messages_sent, 1)
        self.assertEqual(foundation.running_indices("app-a"), [0, 1])

        self.assertEqual(await self.nats_server_shown(foundation, manager), second)
        moved = re.search(r"NATS connected to (\S+) after \d+ s", logs.text())
        self.assertIsNotNone(moved, logs.text())
        self.assertEqual(moved.group(1), second)
        self.assertIn(f"NATS disconnected from nats://{MBUS_USER}:***@127.0.0.1:{first.port}",
                      logs.text())
        self.assertNotIn(MBUS_PASSWORD, logs.text())

        # And it keeps healing on the new member: a later crash is restarted too.
        after = time.monotonic()
        dea, instance = foundation.instance("app-a", 0)
        dea.crash(instance.guid)
        await wait_until(lambda: foundation.starts(after), what="start for app-a[0]")
        self.assertEqual([(s["droplet"], s["indices"]) for s in foundation.starts(after)],
                         [("app-a", [0])])
        print(f"\nreconnected {reconnect:.2f} s after its member's SIGKILL; "
              f"the crash healed {healed:.2f} s after it")

    async def nats_server_shown(self, foundation, manager):
        """/varz's nats_server, checked against the /metrics label."""
        port = manager.status_server.port
        code, body = await foundation.status_get(port, "/varz")
        self.assertEqual(code, 200)
        shown = orjson.loads(body)["nats_server"]
        code, body = await foundation.status_get(port, "/metrics")
        self.assertIn(f'health_manager_nats_server{{server="{shown}"}} 1.0', body.decode())
        self.assertNotIn(MBUS_PASSWORD.encode(), body)
        return shown
