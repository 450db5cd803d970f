"""A simulated DEA: runs instances with a configurable crash behaviour, heartbeats them and
reports their exits, on the wire as dea_ng did in 2013 (PROTOCOL.md §1.2, §1.3). Its
heartbeats go on NATS or, as from cf-release v235, over HTTPS (`heartbeats.py`); it
evacuates the Nov 2013 way (`droplet.exited` DEA_EVACUATION) or the HM9000 way (EVACUATING
heartbeats, HM9000.md §5.6).

An app's behaviour is the simulation's stand-in for its code, carried by every start
message: None (healthy), `crash_every(seconds)` or `CRASH_ON_START` (flapping).
"""

import itertools

import orjson
from twisted.internet import defer, task
from twisted.logger import Logger

from health_manager.constants import (
    CRASHED,
    EVACUATING,
    EXIT_CRASHED,
    EXIT_DEA_EVACUATION,
    EXIT_DEA_SHUTDOWN,
    EXIT_STOPPED,
    RUNNING,
    STARTING,
)
from health_manager.simulation.heartbeats import NatsHeartbeats

CRASH_ON_START = {"crash": "on_start"}


def crash_every(seconds):
    """The behaviour of an app that crashes `seconds` after it starts running."""
    return {"crash": "every", "after": seconds}


class SimulatedInstance:
    __slots__ = ("guid", "droplet", "version", "index", "state", "state_timestamp",
                 "behaviour", "timer")

    def __init__(self, guid, droplet, version, index, state, now, behaviour):
        self.guid = guid
        self.droplet = droplet
        self.version = version
        self.index = index
        self.state = state
        self.state_timestamp = now
        self.behaviour = behaviour
        self.timer = None

    @property
    def live(self):
        return self.state in (STARTING, RUNNING)

    def cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class SimulatedDea:
    log = Logger()

    def __init__(self, bus, clock, uuid, heartbeat_interval=10, startup_delay=1.0,
                 crash_lifetime=3600, advertise_interval=5, partition="default", rng=None,
                 shuffle_heartbeats=False, heartbeats=None, empty_heartbeats=False):
        """`rng` (a random.Random) spreads crash times by ±50 %; None keeps them exact.
        `shuffle_heartbeats` lists heartbeat entries in a random order (needs `rng`): dea_ng
        promises no order, so the health manager must not depend on one. `heartbeats` (an
        IHeartbeatSender) delivers them; None: on `bus` as `dea.heartbeat`.
        `empty_heartbeats`: heartbeat with no instances too, as dea_ng from Dec 2014
        (`0b150047`), so HM9000 could tell an empty DEA from a silent one."""
        self._bus = bus
        self._clock = clock
        self.uuid = uuid
        self.heartbeat_interval = heartbeat_interval
        self.startup_delay = startup_delay
        self.crash_lifetime = crash_lifetime
        self.partition = partition
        self._rng = rng
        self._shuffle = shuffle_heartbeats and rng is not None
        self.instances = {}  # guid -> SimulatedInstance, in start order
        self._heartbeats = heartbeats if heartbeats is not None else NatsHeartbeats(bus)
        self._empty_heartbeats = empty_heartbeats
        self.active = False
        self.evacuating = False
        self._evacuation_timeout = None  # the IDelayedCall ending an evacuation
        self.calm = False
        self.crashes = 0
        self.heartbeats_sent = 0
        self._guids = itertools.count(1)
        self._subscriptions = []
        self._heartbeat = task.LoopingCall(self.send_heartbeat)
        self._heartbeat.clock = clock
        self._advertise = task.LoopingCall(self.advertise)
        self._advertise.clock = clock
        self._advertise_interval = advertise_interval

    # --- lifecycle -------------------------------------------------------------------------

    def start(self):
        """Subscribe and begin heartbeating; fires once the subscriptions are made."""
        self.active = True
        subscribed = []
        for subject, handler in ((f"dea.{self.uuid}.start", self._on_start),
                                 ("dea.stop", self._on_stop),
                                 ("healthmanager.start", self._on_hm_start)):
            d = self._bus.subscribe(subject, handler)
            subscribed.append(d.addCallback(self._subscriptions.append))
        self._heartbeat.start(self.heartbeat_interval, now=False)
        self._advertise.start(self._advertise_interval, now=True)
        return defer.gatherResults(subscribed, consumeErrors=True)

    def evacuate(self):
        """DEA_EVACUATION for every live instance, then silence (the Nov 2013 DEA)."""
        self._leave(EXIT_DEA_EVACUATION)

    def evacuate_with_heartbeats(self, timeout, announce_exits=False):
        """Deterministic evacuation, as dea_ng did it from Dec 2013 (`9e8c05c6`;
        `lib/dea/lifecycle/evacuation_handler.rb`, HM9000.md §5.6): `dea.shutdown` at once
        and no more advertising, so the CC places nothing here, and no more starts taken;
        every STARTING or RUNNING instance turns EVACUATING and is heartbeated so until it
        is stopped; once none is left, or after `timeout` seconds (the bail-out time), the
        DEA leaves without another word. `announce_exits`: also a `droplet.exited`
        DEA_EVACUATION for each of them first, as dea_ng did until Jun 2016 (`5e3561eb`)."""
        if not self.active or self.evacuating:
            return
        self.evacuating = True
        self._bus.publish("dea.shutdown", orjson.dumps({"id": self.uuid}))
        if self._advertise.running:
            self._advertise.stop()
        now = self._clock.seconds()
        for instance in self.instances.values():
            if instance.live:
                if announce_exits:
                    self._publish_exit(instance, EXIT_DEA_EVACUATION)
                instance.cancel_timer()
                instance.state = EVACUATING
                instance.state_timestamp = now
        self.send_heartbeat()
        self._evacuation_timeout = self._clock.callLater(timeout, self._evacuated)
        self._leave_if_evacuated()

    def _leave_if_evacuated(self):
        if self.evacuating and not any(i.state == EVACUATING for i in self.instances.values()):
            self._evacuated()

    def _evacuated(self):
        # What still runs here dies with the DEA: its heartbeats just stop.
        self.stop()
        self.instances.clear()

    def shutdown(self):
        """DEA_SHUTDOWN for every live instance, then silence."""
        self._leave(EXIT_DEA_SHUTDOWN)

    def _leave(self, reason):
        if not self.active:
            return
        self.active = False
        for instance in list(self.instances.values()):
            if instance.live:
                self._publish_exit(instance, reason)
            instance.cancel_timer()
        self.instances.clear()
        self._bus.publish("dea.shutdown", orjson.dumps({"id": self.uuid}))
        self.stop()

    def stop(self):
        """Stop timers and subscriptions without telling anyone (the process vanished);
        returns a Deferred that fires once no heartbeat is in flight."""
        self.active = False
        for loop in (self._heartbeat, self._advertise):
            if loop.running:
                loop.stop()
        for instance in self.instances.values():
            instance.cancel_timer()
        if self._evacuation_timeout is not None and self._evacuation_timeout.active():
            self._evacuation_timeout.cancel()
        self._evacuation_timeout = None
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        del self._subscriptions[:]
        return self._heartbeats.stop()

    # --- instances -------------------------------------------------------------------------

    def start_instance(self, droplet, version, index, behaviour=None):
        guid = f"{self.uuid}-{next(self._guids):05d}"
        instance = SimulatedInstance(guid, droplet, version, index, STARTING,
                                     self._clock.seconds(), behaviour)
        self.instances[guid] = instance
        instance.timer = self._clock.callLater(self.startup_delay, self._started, instance)
        return instance

    def _started(self, instance):
        instance.timer = None
        if (instance.behaviour or {}).get("crash") == "on_start":
            self.crash(instance.guid)
            return
        instance.state = RUNNING
        instance.state_timestamp = self._clock.seconds()
        # As dea_ng: a heartbeat right after an instance goes STARTING -> RUNNING.
        self.send_heartbeat()
        behaviour = instance.behaviour or {}
        if behaviour.get("crash") == "every" and not self.calm:
            delay = float(behaviour.get("after", 30))
            if self._rng is not None:
                delay *= self._rng.uniform(0.5, 1.5)
            instance.timer = self._clock.callLater(delay, self.crash, instance.guid)

    def crash(self, guid):
        """Crash a live instance: kept as CRASHED (the latest crash of its app only) and
        reported with `droplet.exited` CRASHED."""
        instance = self.instances.get(guid)
        if instance is None or not instance.live:
            return
        instance.cancel_timer()
        for other in list(self.instances.values()):
            if other.droplet == instance.droplet and other.state == CRASHED:
                self._forget(other)
        instance.state = CRASHED
        instance.state_timestamp = self._clock.seconds()
        self.crashes += 1
        self._publish_exit(instance, EXIT_CRASHED)
        instance.timer = self._clock.callLater(self.crash_lifetime, self._forget, instance)

    def calm_down(self):
        """No more periodic crashes from here on (crash-on-start apps still crash)."""
        self.calm = True
        for instance in self.instances.values():
            if instance.state == RUNNING:
                instance.cancel_timer()

    def kill(self, guid):
        """The instance vanishes without a word: only missing heartbeats tell."""
        instance = self.instances.get(guid)
        if instance is not None:
            self._forget(instance)

    def stop_instance(self, guid):
        instance = self.instances.get(guid)
        if instance is None:
            return
        if instance.live:
            self._publish_exit(instance, EXIT_STOPPED)
        self._forget(instance)
        self._leave_if_evacuated()

    def _forget(self, instance):
        instance.cancel_timer()
        self.instances.pop(instance.guid, None)

    def live_instances(self):
        return [i for i in self.instances.values() if i.live]

    # --- the wire --------------------------------------------------------------------------

    def heartbeat_payload(self):
        entries = [
            {"cc_partition": self.partition, "droplet": i.droplet, "version": i.version,
             "instance": i.guid, "index": i.index, "state": i.state,
             "state_timestamp": i.state_timestamp}
            for i in self.instances.values()]
        if self._shuffle:
            self._rng.shuffle(entries)
        return {"dea": self.uuid, "droplets": entries}

    def send_heartbeat(self):
        # The 2013 DEA sends no heartbeat when it has no instances.
        if self.active and (self.instances or self._empty_heartbeats):
            self._heartbeats.send(self.heartbeat_payload())
            self.heartbeats_sent += 1

    def advertise(self):
        counts: dict[str, int] = {}
        for instance in self.live_instances():
            counts[instance.droplet] = counts.get(instance.droplet, 0) + 1
        self._bus.publish("dea.advertise", orjson.dumps({
            "id": self.uuid, "stacks": ["lucid64"], "available_memory": 30720,
            "app_id_to_count": counts}))

    def _publish_exit(self, instance, reason):
        payload = {"cc_partition": self.partition, "droplet": instance.droplet,
                   "version": instance.version, "instance": instance.guid,
                   "index": instance.index, "reason": reason}
        if reason == EXIT_CRASHED:
            payload.update(exit_status=137, exit_description="simulated crash",
                           crash_timestamp=int(instance.state_timestamp))
        else:
            payload.update(exit_status=-1, exit_description="")
        self._bus.publish("droplet.exited", orjson.dumps(payload))

    def _on_start(self, message):
        try:
            payload = orjson.loads(message.data)
            droplet, version, index = payload["droplet"], payload["version"], payload["index"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.log.warn("dea {uuid}: bad start ignored: {data!r}", uuid=self.uuid,
                          data=message.data[:200])
            return
        # As dea_ng from Feb 2016 (`064a6511`): an evacuating DEA starts nothing.
        if self.active and not self.evacuating:
            self.start_instance(droplet, version, index, payload.get("behaviour"))

    def _on_stop(self, message):
        try:
            payload = orjson.loads(message.data)
            droplet = payload["droplet"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.log.warn("dea {uuid}: bad stop ignored: {data!r}", uuid=self.uuid,
                          data=message.data[:200])
            return
        # As dea_ng: an absent or empty filter matches every instance of the droplet.
        guids = set(payload.get("instances") or ())
        indices = set(payload.get("indices") or ())
        version = payload.get("version") if indices else None
        for instance in list(self.instances.values()):
            if instance.droplet != droplet:
                continue
            if guids and instance.guid not in guids:
                continue
            if indices and (instance.index not in indices or instance.version != version):
                continue
            self.stop_instance(instance.guid)

    def _on_hm_start(self, message):
        self.send_heartbeat()
