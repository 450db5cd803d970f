"""Bulk API credentials from the config (issue 19, HM9000 style): with bulk_api.user and
bulk_api.password the health manager reads the desired state with them and never asks
`cloudcontroller.bulk.credentials.*` over NATS; wrong ones are a clear, counted 401.
Real NATS, the fake CC over real HTTP."""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from health_manager.config import build_config
from health_manager.manager import Manager
from spec.integration.support import (
    BULK_PASSWORD,
    LiveFoundation,
    LogCapture,
    Recorder,
    wait_until,
)

CREDENTIALS_SUBJECT = "cloudcontroller.bulk.credentials.default"


class ConfiguredBulkCredentialsTests(TestCase):
    timeout = 30

    async def setUp(self):
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.foundation = await LiveFoundation(self, deas=1).start()
        self.foundation.place("app-a", 1)
        # Whoever asks for credentials on NATS is seen here (the fake CC answers them).
        self.asked = Recorder()
        await self.foundation.bus.subscribe(CREDENTIALS_SUBJECT, self.asked)
        await self.foundation.bus.flush()

    async def start_manager(self, password):
        raw = self.foundation.config_mapping()
        raw["bulk_api"].update(user="bulk_api", password=password)
        config, warnings = build_config(raw, environ={})
        self.assertEqual(warnings, [])
        self.foundation.manager = manager = Manager(config, reactor)
        manager.startService()
        await manager._started
        return manager

    async def test_configured_credentials_read_the_desired_state(self):
        """The desired state becomes fresh with the configured credentials, and no
        credentials request ever crosses NATS."""
        manager = await self.start_manager(BULK_PASSWORD)
        await wait_until(manager.desired_state.is_fresh, what="desired state fresh")
        self.assertIsNotNone(manager.registry.get("app-a").live_version)
        await self.foundation.bus.flush()
        self.assertEqual(self.asked.messages, [])
        self.assertEqual(manager.metrics.bulk_credentials_requests, 0)
        self.assertEqual(manager.metrics.bulk_api_unauthorized, 0)

    async def test_wrong_configured_password_is_a_counted_401(self):
        """A wrong configured password: 401s, counted, logged as the configured credentials
        being refused, and still no NATS credentials request."""
        manager = await self.start_manager("not-the-password")
        await wait_until(lambda: manager.metrics.bulk_api_unauthorized >= 2,
                         what="two 401s (a pass and its retry)")
        self.assertFalse(manager.desired_state.is_fresh())
        self.assertIn("refused the configured credentials (bulk_api.user 'bulk_api')",
                      self.logs.text())
        self.assertNotIn("not-the-password", self.logs.text())
        await self.foundation.bus.flush()
        self.assertEqual(self.asked.messages, [])
