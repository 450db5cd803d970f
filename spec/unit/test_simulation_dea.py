"""The simulated DEA on task.Clock: heartbeat contents, exits, crash behaviours, evacuation."""

import orjson
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from health_manager.simulation.dea import CRASH_ON_START, SimulatedDea, crash_every
from health_manager.simulation.heartbeats import IHeartbeatSender
from health_manager.testing.bus import InMemoryBus


class DeaCase(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.bus = InMemoryBus(self.clock)
        self.bus.start()
        self.dea = SimulatedDea(self.bus, self.clock, "dea-1", heartbeat_interval=10,
                                startup_delay=1, crash_lifetime=100)
        self.dea.start()
        self.addCleanup(self.dea.stop)

    def heartbeats(self):
        return self.bus.published_json("dea.heartbeat")

    def exits(self):
        return self.bus.published_json("droplet.exited")

    def send_start(self, droplet="app-1", index=0, behaviour=None):
        self.bus.publish_json("dea.dea-1.start", {"droplet": droplet, "version": "v1",
                                                  "index": index, "behaviour": behaviour})
        return list(self.dea.instances.values())[-1]


class HeartbeatTests(DeaCase):
    def test_no_heartbeat_without_instances(self):
        """A DEA with no instances sends no heartbeat."""
        self.clock.advance(30)
        self.assertEqual(self.heartbeats(), [])

    def test_empty_heartbeats_from_december_2014(self):
        """A DEA built with empty_heartbeats heartbeats with no instance too."""
        dea = SimulatedDea(self.bus, self.clock, "dea-e", heartbeat_interval=10,
                           empty_heartbeats=True)
        dea.start()
        self.addCleanup(dea.stop)
        self.clock.advance(10)
        self.assertIn({"dea": "dea-e", "droplets": []}, self.heartbeats())

    def test_heartbeat_fields(self):
        """A heartbeat lists every instance with the §1.2 fields."""
        instance = self.send_start()
        self.clock.pump([1, 9])
        beat = self.heartbeats()[-1]
        self.assertEqual(beat["dea"], "dea-1")
        self.assertEqual(beat["droplets"], [{
            "cc_partition": "default", "droplet": "app-1", "version": "v1",
            "instance": instance.guid, "index": 0, "state": "RUNNING",
            "state_timestamp": 1001.0}])

    def test_starting_then_running_with_immediate_heartbeat(self):
        """An instance is STARTING for the startup delay, then RUNNING with a heartbeat at once."""
        instance = self.send_start()
        self.assertEqual(instance.state, "STARTING")
        self.clock.advance(1)
        self.assertEqual(instance.state, "RUNNING")
        self.assertEqual([d["state"] for d in self.heartbeats()[0]["droplets"]], ["RUNNING"])

    def test_periodic_heartbeats(self):
        """Heartbeats are sent every heartbeat_interval."""
        self.send_start()
        self.clock.advance(1)
        self.clock.pump([10] * 3)
        self.assertEqual(len(self.heartbeats()), 4)

    def test_healthmanager_start_gets_heartbeat(self):
        """healthmanager.start is answered with an immediate heartbeat."""
        self.send_start()
        self.bus.publish("healthmanager.start", b"{}")
        self.assertEqual(len(self.heartbeats()), 1)

    def test_advertise_counts_live_instances(self):
        """dea.advertise reports the live instances per app."""
        self.send_start()
        self.send_start(index=1)
        self.clock.advance(5)
        self.assertEqual(self.bus.published_json("dea.advertise")[-1]["app_id_to_count"],
                         {"app-1": 2})


class CrashTests(DeaCase):
    def test_crash_reports_exit_and_keeps_crashed(self):
        """A crash sends droplet.exited CRASHED with crash_timestamp; heartbeats show CRASHED."""
        instance = self.send_start()
        self.clock.advance(5)
        self.dea.crash(instance.guid)
        exit_ = self.exits()[-1]
        self.assertEqual((exit_["reason"], exit_["crash_timestamp"], exit_["instance"]),
                         ("CRASHED", 1005, instance.guid))
        self.assertIsInstance(exit_["crash_timestamp"], int)
        self.clock.advance(10)
        self.assertEqual(self.heartbeats()[-1]["droplets"][0]["state"], "CRASHED")

    def test_only_latest_crash_per_app_kept(self):
        """Only the most recent crash of an app stays in heartbeats."""
        first = self.send_start(index=0)
        second = self.send_start(index=1)
        self.clock.advance(1)
        self.dea.crash(first.guid)
        self.dea.crash(second.guid)
        self.assertEqual(list(self.dea.instances), [second.guid])

    def test_crash_forgotten_after_lifetime(self):
        """A crashed instance is dropped after crash_lifetime."""
        instance = self.send_start()
        self.clock.advance(1)
        self.dea.crash(instance.guid)
        self.clock.advance(100)
        self.assertEqual(self.dea.instances, {})

    def test_crash_every(self):
        """An app with crash_every(N) crashes N seconds after it is RUNNING."""
        instance = self.send_start(behaviour=crash_every(20))
        self.clock.pump([1, 19])
        self.assertEqual(instance.state, "RUNNING")
        self.clock.advance(1)
        self.assertEqual(instance.state, "CRASHED")

    def test_calm_down_stops_periodic_crashes(self):
        """After calm_down() an app with crash_every(N) keeps running."""
        instance = self.send_start(behaviour=crash_every(20))
        self.clock.advance(1)
        self.dea.calm_down()
        self.clock.advance(60)
        self.assertEqual(instance.state, "RUNNING")

    def test_crash_on_start(self):
        """A flapping app crashes at the end of its startup, never reaching RUNNING."""
        instance = self.send_start(behaviour=CRASH_ON_START)
        self.clock.advance(1)
        self.assertEqual(instance.state, "CRASHED")
        self.assertEqual([e["reason"] for e in self.exits()], ["CRASHED"])
        self.assertEqual(self.heartbeats(), [])

    def test_kill_is_silent(self):
        """A killed instance vanishes with no exit message."""
        instance = self.send_start()
        self.dea.kill(instance.guid)
        self.assertEqual((self.dea.instances, self.exits()), ({}, []))


class StopTests(DeaCase):
    def test_stop_by_guid(self):
        """dea.stop with instances stops only those, each with droplet.exited STOPPED."""
        first, second = self.send_start(index=0), self.send_start(index=1)
        self.bus.publish_json("dea.stop", {"droplet": "app-1", "instances": [first.guid]})
        self.assertEqual(list(self.dea.instances), [second.guid])
        self.assertEqual([(e["reason"], e["instance"]) for e in self.exits()],
                         [("STOPPED", first.guid)])

    def test_stop_without_filter_stops_all(self):
        """dea.stop with no or an empty instances list stops every instance of the app."""
        self.send_start(index=0)
        self.send_start(droplet="app-2")
        self.bus.publish_json("dea.stop", {"droplet": "app-1", "instances": []})
        self.assertEqual([i.droplet for i in self.dea.instances.values()], ["app-2"])

    def test_stop_by_indices(self):
        """dea.stop with version and indices stops those indices only."""
        self.send_start(index=0)
        self.send_start(index=2)
        self.bus.publish_json("dea.stop", {"droplet": "app-1", "version": "v1", "indices": [2]})
        self.assertEqual([i.index for i in self.dea.instances.values()], [0])

    def test_bad_messages_ignored(self):
        """Malformed start and stop messages are ignored."""
        self.bus.publish("dea.dea-1.start", b"{")
        self.bus.publish("dea.stop", orjson.dumps([1]))
        self.assertEqual(self.dea.instances, {})


class LeaveTests(DeaCase):
    def test_evacuate(self):
        """evacuate() sends DEA_EVACUATION per live instance, dea.shutdown, then no heartbeats."""
        self.send_start(index=0)
        self.send_start(index=1)
        self.clock.advance(1)
        count = len(self.heartbeats())
        self.dea.evacuate()
        self.assertEqual([e["reason"] for e in self.exits()], ["DEA_EVACUATION"] * 2)
        self.assertEqual(self.bus.published_json("dea.shutdown"), [{"id": "dea-1"}])
        self.clock.advance(30)
        self.assertEqual(len(self.heartbeats()), count)

    def test_shutdown(self):
        """shutdown() sends DEA_SHUTDOWN per live instance and ignores later starts."""
        self.send_start()
        self.dea.shutdown()
        self.assertEqual([e["reason"] for e in self.exits()], ["DEA_SHUTDOWN"])
        self.bus.publish_json("dea.dea-1.start", {"droplet": "a", "version": "v", "index": 0})
        self.assertEqual(self.dea.instances, {})


class EvacuatingHeartbeatsTests(DeaCase):
    """Evacuation as DEAs did it from Dec 2013 (HM9000.md §5.6)."""

    def setUp(self):
        super().setUp()
        self.running = [self.send_start(index=0), self.send_start(index=1)]
        self.clock.advance(1)
        self.crashed = self.send_start(droplet="app-2", behaviour=CRASH_ON_START)
        self.clock.advance(1)
        self.bus.clear()
        self.dea.evacuate_with_heartbeats(timeout=60)

    def test_goodbye_then_evacuating_heartbeats(self):
        """dea.shutdown at once, no exits, and every live instance heartbeated EVACUATING
        (crashed ones stay CRASHED) at once and every interval after."""
        self.assertEqual(self.bus.published_json("dea.shutdown"), [{"id": "dea-1"}])
        self.assertEqual(self.exits(), [])
        self.clock.advance(10)
        for beat in self.heartbeats():
            self.assertEqual(sorted((d["droplet"], d["state"]) for d in beat["droplets"]),
                             [("app-1", "EVACUATING"), ("app-1", "EVACUATING"),
                              ("app-2", "CRASHED")])
        self.assertEqual(len(self.heartbeats()), 2)

    def test_no_more_advertising(self):
        """The CC must not place replacements here."""
        self.clock.advance(30)
        self.assertEqual(self.bus.published_json("dea.advertise"), [])

    def test_leaves_once_every_evacuating_instance_is_stopped(self):
        """Each stop takes one instance away; after the last the DEA falls silent."""
        self.bus.publish_json("dea.stop", {"droplet": "app-1",
                                           "instances": [self.running[0].guid]})
        self.assertTrue(self.dea.active)
        self.bus.publish_json("dea.stop", {"droplet": "app-1",
                                           "instances": [self.running[1].guid]})
        self.assertFalse(self.dea.active)
        self.bus.clear()
        self.clock.advance(60)
        self.assertEqual(self.bus.published, [])

    def test_leaves_after_the_timeout(self):
        """Nobody stops them: the DEA leaves after the timeout, its instances with it."""
        self.clock.advance(59)
        self.assertTrue(self.dea.active)
        self.clock.advance(1)
        self.assertFalse(self.dea.active)
        self.assertEqual(self.dea.instances, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_more_starts(self):
        """As dea_ng from Feb 2016: an evacuating DEA takes no start."""
        self.send_start(index=5)
        self.assertEqual(sorted(i.index for i in self.dea.instances.values()), [0, 0, 1])

    def test_exits_announced_until_june_2016(self):
        """With announce_exits (dea_ng before Jun 2016), a droplet.exited DEA_EVACUATION for
        each instance turned EVACUATING."""
        dea = SimulatedDea(self.bus, self.clock, "dea-2", heartbeat_interval=10,
                           startup_delay=0)
        dea.start()
        self.addCleanup(dea.stop)
        instance = dea.start_instance("app-3", "v1", 0)
        self.clock.advance(0)
        dea.evacuate_with_heartbeats(timeout=60, announce_exits=True)
        self.assertEqual([(e["instance"], e["reason"]) for e in self.exits()],
                         [(instance.guid, "DEA_EVACUATION")])
        self.assertEqual(instance.state, "EVACUATING")

    def test_twice_is_once(self):
        self.dea.evacuate_with_heartbeats(timeout=60)
        self.assertEqual(len(self.bus.published_json("dea.shutdown")), 1)


class HeartbeatSenderTests(SynchronousTestCase):
    def test_heartbeats_go_to_the_given_sender(self):
        """A DEA built with a sender hands it the dea.heartbeat payload, not the bus."""
        clock = task.Clock()
        bus = InMemoryBus(clock)
        bus.start()
        sent = []
        dea = SimulatedDea(bus, clock, "dea-h", heartbeat_interval=10, startup_delay=1,
                           heartbeats=RecordingHeartbeats(sent))
        dea.start()
        self.addCleanup(dea.stop)
        dea.start_instance("app-1", "v1", 0)
        clock.advance(1)
        self.assertEqual(sent, [dea.heartbeat_payload()])
        self.assertEqual(bus.published_json("dea.heartbeat"), [])


@implementer(IHeartbeatSender)
class RecordingHeartbeats:
    """An IHeartbeatSender keeping what it is given (the HTTPS one is tested for real in
    spec/integration/test_simulation_https_heartbeats.py)."""

    def __init__(self, sent):
        self.sent = sent

    def send(self, payload):
        self.sent.append(payload)

    def stop(self):
        return defer.succeed(None)
