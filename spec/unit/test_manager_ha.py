"""The Manager's HA wiring: the lease (behind its journal's handover) as its leadership,
gating the Nudger, in /varz, and requests in one queue group; without `ha` a lone HM as
before."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.constants import LOW
from health_manager.ha.handover import Handover
from health_manager.ha.lease import Lease
from health_manager.interfaces import ILeadership
from health_manager.leadership import SingleLeadership
from health_manager.manager import Manager
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.orders import start_order

BASE = {"mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "h"}}
HA = {"redis": "redis://127.0.0.1:1/0", "lease_duration": 3, "renew_deadline": 2,
      "retry_period": 1}


def manager(**raw):
    config, _ = build_config(dict(BASE, **raw), {})
    reactor = task.Clock()
    bus = InMemoryBus(reactor)
    bus.start()
    bus.set_connected(True)
    return Manager(config, reactor, bus=bus, http_client=object()), bus


def start(droplet):
    return start_order(droplet)


class ManagerHaTests(SynchronousTestCase):
    def test_lease_is_the_leadership(self):
        """With `ha`, the leadership is a Lease named by the component uuid, standby
        until it holds the lease; /varz says so."""
        hm, _ = manager(ha=HA)
        self.assertIsInstance(hm.leadership, Handover)
        self.assertIsInstance(hm.lease, Lease)
        verifyObject(ILeadership, hm.leadership)
        self.assertEqual(hm.lease.holder_id, hm.component.uuid)
        self.assertFalse(hm.leadership.is_acting())
        varz = hm.metrics.varz()
        self.assertEqual((varz["ha_role"], varz["ha_leader"], varz["ha_transitions"]),
                         ("standby", None, 0))

    def test_standby_nudger_sends_nothing(self):
        """The Manager's Nudger asks the lease: a standby's start is dropped, not queued."""
        hm, bus = manager(ha=HA)
        hm.nudger.queue_start("a", 0, LOW, lambda: start("a"))
        self.assertEqual(bus.published_json("health.start"), [])
        self.assertEqual(len(hm.nudger), 0)
        self.assertEqual(hm.metrics.varz()["ha_suppressed_messages"], 1)

    def test_requests_in_one_queue_group(self):
        """With `ha`, status/health/droplet requests are subscribed in a queue group."""
        hm, bus = manager(ha=HA)
        hm.reporter.subscribe()
        queues = {s.subject: s.queue for s in bus.subscriptions}
        for subject in ("healthmanager.status", "healthmanager.health",
                        "healthmanager.droplet"):
            self.assertEqual(queues[subject], "health_manager")

    def test_single_without_ha(self):
        """Without `ha`: SingleLeadership, acting, ha_role 'single', no queue group."""
        hm, bus = manager()
        self.assertIsInstance(hm.leadership, SingleLeadership)
        hm.nudger.queue_start("a", 0, LOW, lambda: start("a"))
        self.assertEqual(len(bus.published_json("health.start")), 1)
        self.assertEqual(hm.metrics.varz()["ha_role"], "single")
        hm.reporter.subscribe()
        self.assertEqual({s.queue for s in bus.subscriptions}, {None})


class ManagerEtcdTests(SynchronousTestCase):
    def test_etcd_stores_behind_the_lease_and_journal(self):
        """With `ha.etcd`, the lease and the journal keep their state in etcd, on one
        client of the listed members."""
        from health_manager.ha.etcd import EtcdJournalStore, EtcdLeaseStore

        etcd = {**{k: v for k, v in HA.items() if k != "redis"},
                "etcd": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}
        hm, _ = manager(ha=etcd)
        self.assertIsInstance(hm.lease._store, EtcdLeaseStore)
        self.assertIsInstance(hm.journal._store, EtcdJournalStore)
        self.assertEqual(hm.journal.address, "etcd http://127.0.0.1:1,http://127.0.0.1:2")
        self.assertFalse(hm.leadership.is_acting())
