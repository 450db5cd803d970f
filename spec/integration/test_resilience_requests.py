"""Requests from the Cloud Controller side with bad payloads, over a real nats-server
(issue 6, item 5): no reply (or an empty one), never a crash, never a reply on a subject the
request did not name.
"""

import orjson
from twisted.trial.unittest import TestCase

from spec.integration.support import LiveFoundation, LogCapture, sleep, wait_until

BAD = [b"", b"{", b"null", b"[]", b'"x"', b"9" * 400, b"[" * 5000, b"\xff\xfe",
       b'{"droplet": 1, "state": "CRASHED"}', b'{"droplet": "app-a", "state": "RUNNING"}',
       b'{"droplet": "app-a", "state": "FLAPPING"}', b'{"droplets": {"droplet": "app-a"}}',
       b'{"droplets": [1, null, {"droplet": []}]}', b'{"droplets": "app-a"}']
SUBJECTS = ("healthmanager.status", "healthmanager.health", "healthmanager.droplet")
# What the health manager publishes by itself, whatever it is asked.
OWN_SUBJECTS = {"healthmanager.start", "vcap.component.announce",
                "cloudcontroller.bulk.credentials.default", "dea.heartbeat", "dea.advertise"}


class BadRequestTests(TestCase):
    timeout = 60

    async def test_bad_requests_get_no_reply_anywhere(self):
        """Bad status/health/droplet requests get no reply, on their reply subject or any
        other; nothing fails; good requests afterwards are answered on their own inbox."""
        logs = LogCapture()
        self.addCleanup(logs.stop)
        foundation = await LiveFoundation(self).start()
        foundation.place("app-a", 2)
        manager = await foundation.start_manager()
        await wait_until(manager.desired_state.is_fresh, what="desired state")
        seen = []
        await foundation.bus.subscribe(">", seen.append)
        await foundation.bus.flush()
        inboxes = []
        for n, data in enumerate(BAD):
            for subject in SUBJECTS:
                inbox = f"_INBOX.bad.{n}.{subject}"
                inboxes.append(inbox)
                foundation.bus.publish(subject, data, reply=inbox)
                foundation.bus.publish(subject, data)
        await foundation.bus.flush()
        await sleep(1.5)
        answers = [m for m in seen if m.subject not in SUBJECTS
                   and m.subject.split(".")[0] not in ("_INBOX",)
                   and m.subject not in OWN_SUBJECTS
                   and not m.subject.startswith(("health.", "droplet.", "dea."))]
        self.assertEqual(answers, [])
        self.assertEqual([m.subject for m in seen if m.subject.startswith("_INBOX.bad.")], [])
        rejected = manager.metrics.varz()["rejected_messages"]
        # Every message is rejected whole, except a health/droplet request whose `droplets`
        # is an array: its bad entries are skipped and counted instead.
        self.assertEqual(sum(rejected.get(s, 0) for s in SUBJECTS),
                         2 * (3 * len(BAD) - 2))
        skipped = manager.metrics.varz()["skipped_entries"]
        self.assertEqual((skipped["healthmanager.health"], skipped["healthmanager.droplet"]),
                         (2 * 3, 2 * 3))
        self.assertNotIn("Traceback", logs.text())

        good = {"healthmanager.health": {"droplets": [{"droplet": "app-a",
                                                       "version": "app-a-v1"}]},
                "healthmanager.status": {"droplet": "app-a", "state": "CRASHED"},
                "healthmanager.droplet": {"droplets": [{"droplet": "app-a"}]}}
        for subject, payload in good.items():
            replies = await foundation.bus.request(subject, orjson.dumps(payload), timeout=2)
            self.assertEqual(len(replies), 1)
        health = await foundation.bus.request(
            "healthmanager.health", orjson.dumps(good["healthmanager.health"]), timeout=2)
        self.assertEqual(orjson.loads(health[0].data),
                         {"droplet": "app-a", "version": "app-a-v1", "healthy": 2})
