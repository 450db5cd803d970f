"""Integration: HM9000's app-state API (HM9000.md §2) over real HTTP on loopback and a real
nats-server, fed by DEA heartbeats and crashes sent over NATS; the replies are read field
by field and as the Cloud Controller reads them (§2.4)."""

import orjson
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from health_manager.bus import NatsBus
from health_manager.contracts.hm9000.serving import PortError
from health_manager.simulation.nats_server import NatsServer
from spec.hm9000_cc import (
    CRASH_COUNT_FIELDS,
    DESIRED_FIELDS,
    HEARTBEAT_FIELDS,
    find_crashes,
    find_flapping_indices,
    healthy_instances,
)
from spec.integration.hm9000_support import API_PASSWORD, API_USER, Hm9000Stack, entry, heartbeat
from spec.integration.support import connected, wait_until


class AppStateApiTests(TestCase):
    timeout = 60

    async def foundation(self, stacks=1):
        """A nats-server, `stacks` health managers' HM9000 servers on it, and a DEA-side
        NATS connection (`self.deas`)."""
        self.nats = NatsServer().start()
        self.addCleanup(self.nats.stop)
        self.stacks = []
        for _ in range(stacks):
            stack = Hm9000Stack(reactor, self.nats.url)
            self.addCleanup(stack.stop)
            self.stacks.append(await stack.start())
        self.deas = NatsBus(reactor, self.nats.url, name="deas")
        self.addCleanup(self.deas.stop)
        await connected(self.deas)
        return self.stacks[0]

    async def send_heartbeats(self, stack, *messages):
        """Publish DEA heartbeats and wait until `stack` applied them all."""
        seen = stack.metrics.heartbeat_msgs_received
        for message in messages:
            self.deas.publish("dea.heartbeat", orjson.dumps(message))
        await wait_until(lambda: stack.metrics.heartbeat_msgs_received == seen + len(messages),
                         what="heartbeats applied")

    async def test_basic_auth_challenge_and_routes(self):
        """A missing or wrong credential gets 401 with the challenge a pre-2016-10 CC needs
        before it sends its credentials, whatever the path; then 404 off the route and 405
        for another method."""
        stack = await self.foundation()
        for auth in (None, (API_USER, "wrong"), ("magnet", API_PASSWORD)):
            code, headers, body = await stack.bulk_app_state([], auth=auth)
            self.assertEqual(code, 401)
            self.assertEqual(headers.getRawHeaders(b"www-authenticate"),
                             [b'Basic realm="API Authentication"'])
            self.assertEqual(body, b"")
        code, _, _ = await stack.bulk_app_state([], auth=None, path="/nope")
        self.assertEqual(code, 401)
        code, _, _ = await stack.bulk_app_state([], path="/nope")
        self.assertEqual(code, 404)
        code, headers, _ = await stack.bulk_app_state(b"", method="GET")
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"POST"])
        self.assertEqual(stack.counters.app_state_auth_failures, 4)
        self.assertEqual(stack.counters.app_state_requests, {})

    async def test_busy_port_names_its_key(self):
        """A port taken by another process stops the start with the key named."""
        stack = await self.foundation()
        other = Hm9000Stack(reactor, self.nats.url, api_port=stack.api.port)
        self.addCleanup(other.http_pool.closeCachedConnections)
        error = self.assertRaises(PortError, other.api.startService)
        self.assertIn("config key 'hm9000.api_port': cannot listen on 127.0.0.1:", str(error))

    async def test_reply_shape_and_the_cc_reading(self):
        """`{}` before the actual state is fresh and for a body that does not parse (200
        both); then guid -> App JSON with every field of HM9000.md §2.2, a desired app
        without heartbeats listed with none (0 healthy, not unknown), an unknown one
        omitted, and the CC's healthy count, crashes and FLAPPING indices right."""
        stack = await self.foundation()
        stack.desire("app-1", instances=3)
        stack.desire("app-2", instances=2, package_state="PENDING")
        apps = [{"droplet": "app-1", "version": "v1"}, {"droplet": "app-2", "version": "v1"},
                {"droplet": "app-9", "version": "v1"}]
        code, headers, body = await stack.bulk_app_state(apps)
        self.assertEqual((code, body), (200, b"{}"))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        await stack.fresh()
        for bad in (b"not json", b'{"droplet": "app-1"}', b'[{"droplet": 1}]'):
            self.assertEqual((await stack.bulk_app_state(bad))[::2], (200, b"{}"))
        self.assertEqual(stack.counters.app_state_bad_requests, {"bulk_app_state": 3})

        # Crash counts expire flapping_timeout after the last crash: recent ones. The
        # count's created_at is the series' first crash.
        last_crash = int(reactor.seconds())
        for n in range(3):
            self.deas.publish("droplet.exited", orjson.dumps({
                "droplet": "app-1", "version": "v1", "instance": f"c{n}", "index": 2,
                "reason": "CRASHED", "crash_timestamp": last_crash - 2 + n}))
        await self.send_heartbeats(
            stack,
            heartbeat("dea-1", entry("g0", 0), entry("g1", 1, state="STARTING"),
                      entry("g9", 7)),
            heartbeat("dea-2", entry("g0b", 0), entry("g2", 2, state="CRASHED", ts=1002.25),
                      entry("old", 1, version="v0")))
        await wait_until(lambda: stack.metrics.droplet_exited_msgs_received == 3,
                         what="crashes applied")
        code, _, body = await stack.bulk_app_state(apps)
        self.assertEqual(code, 200)
        reply = orjson.loads(body)
        self.assertEqual(sorted(reply), ["app-1", "app-2"])
        app = reply["app-1"]
        self.assertEqual(sorted(app), ["crash_counts", "desired", "droplet",
                                       "instance_heartbeats", "version"])
        self.assertEqual((app["droplet"], app["version"]), ("app-1", "v1"))
        self.assertEqual(app["desired"], {"id": "app-1", "version": "v1", "instances": 3,
                                          "state": "STARTED", "package_state": "STAGED"})
        self.assertEqual({k: type(v) for k, v in app["desired"].items()}, DESIRED_FIELDS)
        for beat in app["instance_heartbeats"]:
            self.assertEqual({k: type(v) for k, v in beat.items()}, HEARTBEAT_FIELDS)
            self.assertEqual((beat["droplet"], beat["version"]), ("app-1", "v1"))
        self.assertEqual(sorted((b["dea_guid"], b["instance"], b["index"], b["state"],
                                 b["state_timestamp"]) for b in app["instance_heartbeats"]),
                         [("dea-1", "g0", 0, "RUNNING", 1000.5),
                          ("dea-1", "g1", 1, "STARTING", 1000.5),
                          ("dea-1", "g9", 7, "RUNNING", 1000.5),
                          ("dea-2", "g0b", 0, "RUNNING", 1000.5),
                          ("dea-2", "g2", 2, "CRASHED", 1002.25)])
        self.assertEqual(app["crash_counts"], [
            {"droplet": "app-1", "version": "v1", "instance_index": 2, "crash_count": 3,
             "created_at": last_crash - 2}])
        for count in app["crash_counts"]:
            self.assertEqual({k: type(v) for k, v in count.items()}, CRASH_COUNT_FIELDS)
        self.assertEqual(reply["app-2"]["instance_heartbeats"], [])
        self.assertEqual(reply["app-2"]["desired"]["package_state"], "PENDING")

        # What the CC makes of it: indices 0 and 1 (7 is not wanted, 2 crashed).
        self.assertEqual(healthy_instances(reply, "app-1", 3), 2)
        self.assertEqual(healthy_instances(reply, "app-2", 2), 0)
        self.assertEqual(healthy_instances(reply, "app-9", 1), -1)
        self.assertEqual(find_crashes(reply, "app-1"), [{"instance": "g2", "since": 1002.25}])
        self.assertEqual(find_flapping_indices(reply, "app-1"),
                         [{"index": 2, "since": last_crash - 2}])
        # A guid asked twice: the last existing version wins.
        code, _, body = await stack.bulk_app_state([{"droplet": "app-1", "version": "v1"},
                                                    {"droplet": "app-1", "version": "v0"}])
        self.assertEqual(orjson.loads(body)["app-1"]["instance_heartbeats"][0]["instance"],
                         "old")

    async def test_five_hundred_apps(self):
        """One request for 500 apps, as a CC listing a big space: every app answers."""
        stack = await self.foundation()
        await stack.fresh()
        guids = [f"app-{n:03d}" for n in range(500)]
        for guid in guids:
            stack.desire(guid, instances=2)
        await self.send_heartbeats(stack, *[
            heartbeat(f"dea-{d}", *[entry(f"{guid}-{i}", i, droplet=guid)
                                    for guid in guids[d * 50:(d + 1) * 50] for i in (0, 1)])
            for d in range(10)])
        code, _, body = await stack.bulk_app_state(
            [{"droplet": guid, "version": "v1"} for guid in guids])
        reply = orjson.loads(body)
        self.assertEqual(sorted(reply), guids)
        self.assertEqual({healthy_instances(reply, guid, 2) for guid in guids}, {2})
        self.assertEqual(stack.counters.app_state_requests, {"bulk_app_state": 1})

    async def test_nats_app_state_in_queue_group(self):
        """`app.state` and `app.state.bulk` over a real nats-server: with two health
        managers subscribed, each request gets exactly one reply (queue group hm9000)."""
        await self.foundation(stacks=2)
        beat = heartbeat("dea-1", entry("g0", 0))
        for stack in self.stacks:
            stack.desire("app-1", instances=1)
            await stack.fresh()
        self.deas.publish("dea.heartbeat", orjson.dumps(beat))
        for stack in self.stacks:
            await wait_until(lambda s=stack: s.metrics.heartbeat_msgs_received == 1,
                             what="heartbeat applied by both")
        replies = await self.deas.request(
            "app.state", orjson.dumps({"droplet": "app-1", "version": "v1"}), timeout=0.5,
            max_replies=2)
        self.assertEqual(len(replies), 1)
        app = orjson.loads(replies[0].data)
        self.assertEqual([b["instance"] for b in app["instance_heartbeats"]], ["g0"])
        replies = await self.deas.request(
            "app.state.bulk", orjson.dumps([{"droplet": "app-1", "version": "v1"},
                                            {"droplet": "app-0", "version": "v1"}]),
            timeout=0.5, max_replies=2)
        self.assertEqual(len(replies), 1)
        self.assertEqual(list(orjson.loads(replies[0].data)), ["app-1"])
        self.assertEqual(sum(sum(s.counters.app_state_requests.values())
                             for s in self.stacks), 2)
