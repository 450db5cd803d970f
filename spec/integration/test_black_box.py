"""Black-box mode driven from outside: the health manager runs as a twistd child on a fake
clock; this test process is the Cloud Controller and the DEA, advances time over NATS and
asserts on health.* messages right after each advance_time reply."""

import orjson
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from health_manager.bus import NatsBus
from health_manager.interfaces import RequestTimeout
from health_manager.simulation.cloud_controller import FakeCloudController
from health_manager.simulation.nats_server import NatsServer
from spec.integration.support import Recorder, TwistdProcess, connected, sleep, write_config


class BlackBoxTests(TestCase):
    timeout = 90

    async def setUp(self):
        self.nats = NatsServer().start()
        self.addCleanup(self.nats.stop)
        self.bus = NatsBus(reactor, self.nats.url, name="driver")
        self.addCleanup(self.bus.stop)
        await connected(self.bus)
        self.cc = FakeCloudController(self.bus, reactor)
        await self.cc.start()
        self.cc.listen()
        self.addCleanup(self.cc.stop)
        self.app = self.cc.create_app("app-bb", instances=2, version="v1", place=False)
        self.recorder = Recorder()
        for subject in ("health.start", "health.stop"):
            await self.bus.subscribe(subject, self.recorder)
        self.hm = TwistdProcess(self, write_config(
            self, mbus=self.nats.url, bulk_api={"host": self.cc.url},
            black_box_test_mode=True))
        await self.ready()

    async def ready(self):
        """Readiness: {"seconds": 0} is answered once the HM is subscribed."""
        for _ in range(100):
            try:
                await self.advance(0, timeout=0.5)
                return
            except RequestTimeout:
                await sleep(0.1)
        self.fail(f"no answer to advance_time; output:\n{self.hm.output()}")

    async def advance(self, seconds, timeout=30):
        replies = await self.bus.request("healthmanager.advance_time",
                                         orjson.dumps({"seconds": seconds}), timeout=timeout)
        self.assertEqual(orjson.loads(replies[0].data), {"seconds": seconds})

    def heartbeat(self, *indices):
        self.bus.publish("dea.heartbeat", orjson.dumps({"dea": "dea-0", "droplets": [
            {"droplet": "app-bb", "version": "v1", "instance": f"g{index}", "index": index,
             "state": "RUNNING", "state_timestamp": 1.0} for index in indices]}))

    async def test_missing_and_crashed_instances_started_before_the_reply(self):
        """After droplet_lost of heartbeats, the missing index's start has arrived by the
        time advance_time replies; a crash's start arrives by the next reply."""
        for _ in range(3):
            self.heartbeat(0)
            await self.advance(10)
        self.assertEqual(self.recorder.payloads("health.start"), [])
        self.heartbeat(0)
        await self.advance(10)
        self.assertEqual(self.recorder.payloads("health.start"), [
            {"droplet": "app-bb", "last_updated": self.app.updated_at // 1, "version": "v1",
             "indices": [1], "running": {"v1": 1}, "flapping": False}])

        self.bus.publish("droplet.exited", orjson.dumps({
            "droplet": "app-bb", "version": "v1", "instance": "g0", "index": 0,
            "reason": "CRASHED", "crash_timestamp": 40, "exit_status": 1,
            "exit_description": "boom"}))
        await self.advance(1)
        crash_start = self.recorder.payloads("health.start")[-1]
        self.assertEqual((crash_start["indices"], crash_start["running"]), ([0], {"v1": 0}))

    async def test_invalid_requests_get_an_error_reply(self):
        """Negative, fractional and garbage advance_time requests get an error reply, and
        the driver keeps answering valid ones."""
        for payload in (b'{"seconds": -5}', b'{"seconds": 1.5}', b"garbage"):
            replies = await self.bus.request("healthmanager.advance_time", payload, timeout=5)
            self.assertIn("error", orjson.loads(replies[0].data))
        await self.advance(0)
