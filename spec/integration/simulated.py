"""A simulated foundation with a health manager in this process, for the operator-surface
tests: an embedded nats-server, the fake Cloud Controller and DEAs of
health_manager/simulation with some apps flapping and some instances missing, and the
Manager on the demo configuration with its status server on an ephemeral loopback port."""

import random

from twisted.internet import defer

from health_manager.simulation.foundation import Scenario
from health_manager.simulation.nats_server import NatsServer
from health_manager.simulation.runner import start_foundation_and_hm
from spec.integration.support import connected, wait_until

USER = PASSWORD = "hm"  # demo_config's status credentials


class SimulatedFoundation:
    def __init__(self, test, reactor, apps=12, instances=3, flapping=0.25, missing=0.3,
                 seed=12):
        self._test = test
        self._reactor = reactor
        self.scenario = Scenario(apps=apps, instances=instances, crashy=0.0,
                                 flapping=flapping, missing=missing, deas=2,
                                 crash_period=12)
        self._rng = random.Random(seed)
        self.nats = self.bus = self.foundation = self.manager = None

    async def start(self):
        self.nats = NatsServer(die_with_parent=True).start()
        self._test.addCleanup(self._stop)
        self.bus, self.foundation, self.manager = await start_foundation_and_hm(
            self._reactor, self.nats.url, self.scenario, self._rng, connected)
        await wait_until(lambda: self.manager.status_server.port, what="status server")
        return self

    @property
    def url(self):
        return f"http://{self.manager.status_server.host}"

    async def settled(self, timeout=20):
        """Wait until the HM has analysed a fresh state and some app is flapping."""
        view = self.manager.state_view

        def ready():
            summary = view.summary()
            return (summary["analysed"] and summary["actual_state"] == "fresh"
                    and summary["desired_state"] == "fresh" and summary["flapping"])

        await wait_until(ready, timeout=timeout, what="a fresh, analysed foundation")

    async def _stop(self):
        if self.manager is not None and self.manager.running:
            await self.manager.stopService()
        if self.foundation is not None:
            await defer.maybeDeferred(self.foundation.stop)
        if self.bus is not None:
            await self.bus.stop()
        self.nats.stop()
