"""The fake Cloud Controller: apps table, bulk API over HTTP, credentials responder, and the
respondent to the health manager's starts and stops, speaking one contract (`cc_protocol`):
HM 2.0's `health.start` / `health.stop` (PROTOCOL.md §3.1/§3.2) or HM9000's `hm9000.start` /
`hm9000.stop` (HM9000.md §1.4), judged by that contract's acceptance rules
(`health_manager.contracts.<contract>.acceptance`).

Both generations of CC served `/bulk/apps`, `/bulk/counts` and the NATS credentials request
(ccng `legacy_bulk.rb`, kept until 2017-06-23, `aa1cfd4987`), so those are the same in both
modes; HM9000 itself just never asked for the credentials or the counts.

DEAs are found the way the real CC's DEA pool found them: `dea.advertise` adds or refreshes a
DEA, `dea.shutdown` removes it. Starts go to `dea.<uuid>.start` on the least-loaded DEA;
stops go to `dea.stop`.
"""

import base64
import collections
import itertools
import time

import attrs
import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from health_manager.constants import STAGED, STARTED, STOPPED
from health_manager.contracts.hm2 import acceptance as hm2_acceptance
from health_manager.contracts.hm9000 import acceptance as hm9000_acceptance

# Fault injection values for the bulk API.
FAULT_500 = "500"
FAULT_401 = "401"
FAULT_GARBAGE = "garbage"
FAULT_HANG = "hang"

# The respondent each `cc_protocol` runs: its subjects, queue group and rules.
RESPONDENTS = {"hm2": hm2_acceptance, "hm9000": hm9000_acceptance}

# The latest decisions are kept for tests and the view; counts cover all of them.
DECISIONS_KEPT = 10_000
# As the real CC's DEA pool: a DEA that has not advertised for this long gets no starts.
ADVERTISEMENT_EXPIRATION = 10.0


@attrs.define
class SimulatedApp:
    """One row of the CC apps table. `behaviour` is the simulation's stand-in for the app's
    code: it travels to the DEA with every start."""

    guid: str
    id: int
    state: str
    instances: int
    version: str
    package_state: str = STAGED
    updated_at: float = 0.0
    memory: int = 256
    staged: bool = True
    behaviour: dict | None = None

    def bulk_entry(self):
        return {
            "id": self.guid,
            "instances": self.instances,
            "state": self.state,
            "memory": self.memory,
            "package_state": self.package_state,
            "updated_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.updated_at)),
            "version": self.version,
        }


@attrs.frozen
class Decision:
    """What the CC did with one start or stop request of the health manager."""

    op: str  # "start" or "stop"
    droplet: object
    accepted: bool
    reason: str
    at: float
    payload: dict = attrs.field(eq=False, repr=False)


class FakeCloudController:
    log = Logger()

    def __init__(self, bus, clock, reactor=None, partition="default", user="bulk_api",
                 password="bulk-password", user_count=0, on_decision=None, cc_protocol="hm2"):
        """`on_decision(Decision)`, if given, sees every decision as it is made.
        `cc_protocol` ("hm2" or "hm9000") is the contract whose requests it acts on."""
        if cc_protocol not in RESPONDENTS:
            raise ValueError(f"cc_protocol must be one of {sorted(RESPONDENTS)}, "
                             f"not {cc_protocol!r}")
        self.cc_protocol = cc_protocol
        self._contract = RESPONDENTS[cc_protocol]
        # The subjects its respondent acts on, for the view to name the HM's messages.
        self.start_subject = self._contract.START_SUBJECT
        self.stop_subject = self._contract.STOP_SUBJECT
        self._bus = bus
        self._clock = clock
        self._reactor = reactor if reactor is not None else clock
        self.partition = partition
        self.user = user
        self.password = password
        self.user_count = user_count
        self.apps = {}
        self.decisions: collections.deque[object] = collections.deque(maxlen=DECISIONS_KEPT)
        self._on_decision = on_decision
        self.decision_counts = {(op, ok): 0 for op in ("start", "stop") for ok in (True, False)}
        self.dea_load = {}  # dea uuid -> instances the CC believes it runs
        self._dea_seen = {}  # dea uuid -> when it last advertised
        self.fault = None
        self.bulk_requests = 0
        self._ids = itertools.count(1)
        self._port = None
        self._subscriptions = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self):
        """Subscribe the credentials responder, the HM respondent and the DEA pool; fires
        once the subscriptions are made."""
        contract = self._contract
        handlers = [
            (f"cloudcontroller.bulk.credentials.{self.partition}", self._on_credentials, None),
            (contract.START_SUBJECT, self._on_start_request, contract.RESPONDENT_QUEUE),
            (contract.STOP_SUBJECT, self._on_stop_request, contract.RESPONDENT_QUEUE),
            ("dea.advertise", self._on_dea_advertise, None),
            ("dea.shutdown", self._on_dea_shutdown, None),
        ]
        subscribed = [
            self._bus.subscribe(subject, handler, queue=queue).addCallback(
                self._subscriptions.append)
            for subject, handler, queue in handlers]
        return defer.gatherResults(subscribed, consumeErrors=True)

    def stop(self):
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        del self._subscriptions[:]
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None

    def listen(self, port=0, interface="127.0.0.1"):
        """Serve the bulk API over HTTP; returns the listening port. See `url`."""
        site = server.Site(BulkApiResource(self))
        site.displayTracebacks = False
        self._port = self._reactor.listenTCP(port, site, interface=interface)
        return self._port

    @property
    def url(self):
        assert self._port is not None, "url is known once the server listens"
        address = self._port.getHost()
        return f"http://{address.host}:{address.port}"

    # --- the apps table (what `cf push`, `cf scale`, `cf stop` would do) -------------------

    def create_app(self, guid, instances=1, version=None, state=STARTED, memory=256,
                   package_state=STAGED, behaviour=None, place=True):
        """Add an app. A STARTED app has its instances started at once unless `place` is
        False (the simulation uses that to begin with instances missing)."""
        app = SimulatedApp(
            guid=guid, id=next(self._ids), state=state, instances=instances,
            version=version or f"{guid}-v1", package_state=package_state,
            updated_at=self._clock.seconds(), memory=memory,
            staged=package_state == STAGED, behaviour=behaviour)
        self.apps[guid] = app
        if place and state == STARTED:
            self.start_instances(app, range(instances))
        return app

    def scale_app(self, guid, instances):
        app = self.apps[guid]
        before, app.instances = app.instances, instances
        self._touch(app)
        if app.state == STARTED:
            if instances > before:
                self.start_instances(app, range(before, instances))
            elif instances < before:
                self._dea_stop({"droplet": guid, "version": app.version,
                                "indices": list(range(instances, before))})
            self._broadcast_updated(app)

    def start_app(self, guid):
        app = self.apps[guid]
        app.state = STARTED
        self._touch(app)
        self.start_instances(app, range(app.instances))
        self._broadcast_updated(app)

    def stop_app(self, guid):
        app = self.apps[guid]
        app.state = STOPPED
        self._touch(app)
        self._dea_stop({"droplet": guid})
        self._broadcast_updated(app)

    def delete_app(self, guid):
        """Delete the app: it leaves the bulk API; its instances are left running, so the
        health manager has to find them (extra app)."""
        del self.apps[guid]

    def change_version(self, guid, version):
        """A new droplet: stop every instance, start the new version everywhere."""
        app = self.apps[guid]
        app.version = version
        self._touch(app)
        if app.state == STARTED:
            self._dea_stop({"droplet": guid})
            self.start_instances(app, range(app.instances))
        self._broadcast_updated(app)

    def _touch(self, app):
        app.updated_at = self._clock.seconds()

    def _broadcast_updated(self, app):
        self._bus.publish("droplet.updated", orjson.dumps({"droplet": app.guid}))

    # --- talking to DEAs -------------------------------------------------------------------

    def add_dea(self, uuid):
        """Put a DEA in the pool now, as if it had just advertised an empty load."""
        self.dea_load.setdefault(uuid, 0)
        self._dea_seen[uuid] = self._clock.seconds()

    def start_instances(self, app, indices):
        """One DEA start per index, each on the DEA the CC believes least loaded among
        those that advertised recently."""
        now = self._clock.seconds()
        pool = [uuid for uuid, seen in self._dea_seen.items()
                if now - seen <= ADVERTISEMENT_EXPIRATION]
        for index in indices:
            if not pool:
                self.log.warn("no DEA to start {droplet} index {index}",
                              droplet=app.guid, index=index)
                continue
            dea = min(pool, key=lambda uuid: (self.dea_load[uuid], uuid))
            self.dea_load[dea] += 1
            self._bus.publish(f"dea.{dea}.start", orjson.dumps({
                "droplet": app.guid, "version": app.version, "index": index,
                "name": app.guid, "behaviour": app.behaviour}))

    def _dea_stop(self, payload):
        self._bus.publish("dea.stop", orjson.dumps(payload))

    def _on_dea_advertise(self, message):
        try:
            payload = orjson.loads(message.data)
            self.dea_load[payload["id"]] = sum(payload["app_id_to_count"].values())
            self._dea_seen[payload["id"]] = self._clock.seconds()
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self.log.warn("bad dea.advertise ignored: {data!r}", data=message.data[:200])

    def _on_dea_shutdown(self, message):
        try:
            uuid = orjson.loads(message.data)["id"]
            self.dea_load.pop(uuid, None)
            self._dea_seen.pop(uuid, None)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.log.warn("bad dea.shutdown ignored: {data!r}", data=message.data[:200])

    # --- credentials -----------------------------------------------------------------------

    def _on_credentials(self, message):
        if message.reply:
            self._bus.publish(message.reply, orjson.dumps(
                {"user": self.user, "password": self.password}))

    # --- the respondent: HealthManagerRespondent or HM9000Respondent -----------------------

    def _decide(self, op, payload, accepted, reason):
        droplet = payload.get("droplet") if isinstance(payload, dict) else None
        decision = Decision(op, droplet, accepted, reason, self._clock.seconds(),
                            payload if isinstance(payload, dict) else {})
        self.decisions.append(decision)
        if self._on_decision is not None:
            self._on_decision(decision)
        self.decision_counts[(op, accepted)] += 1
        if not accepted:
            self.log.info("cc refused {contract} {op} for {droplet}: {reason}",
                          contract=self.cc_protocol, op=op, droplet=droplet, reason=reason)

    def _app_named(self, payload):
        droplet = payload.get("droplet") if isinstance(payload, dict) else None
        return self.apps.get(droplet) if isinstance(droplet, str) else None

    def _on_start_request(self, message):
        payload = _decode(message.data)
        app = self._app_named(payload)
        verdict = self._contract.judge_start(app, payload)
        self._decide("start", payload, verdict.accepted, verdict.reason)
        if verdict.accepted:
            self.start_instances(app, verdict.indices)

    def _on_stop_request(self, message):
        payload = _decode(message.data)
        verdict = self._contract.judge_stop(self._app_named(payload), payload)
        self._decide("stop", payload, verdict.accepted, verdict.reason)
        if not verdict.accepted:
            return
        if verdict.instances is None:
            self._dea_stop({"droplet": payload["droplet"]})
        else:
            self._dea_stop({"droplet": payload["droplet"], "instances": list(verdict.instances)})

    # --- the bulk API ----------------------------------------------------------------------

    def bulk_page(self, token_id, batch_size):
        """(results, next token id) for apps with id > token_id, in id order."""
        rows = sorted((a for a in self.apps.values() if a.id > token_id), key=lambda a: a.id)
        page = rows[:batch_size]
        results = {app.guid: app.bulk_entry() for app in page}
        return results, (page[-1].id if page else None)

    def check_auth(self, header):
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def bulk_request(self, path, args, authorization):
        """One bulk API request with the injected faults applied: (HTTP code, JSON body),
        or None for a request that never gets an answer. `args` maps query names to values."""
        self.bulk_requests += 1
        if self.fault == FAULT_HANG:
            return None
        if self.fault == FAULT_500:
            return 500, b'{"error": "injected"}'
        if self.fault == FAULT_GARBAGE:
            return 200, b"<html>this is not json"
        if self.fault == FAULT_401 or not self.check_auth(authorization):
            return 401, b'{"error": "unauthorized"}'
        if path == "/bulk/apps":
            return self._apps_page(args)
        if path == "/bulk/counts":
            if args.get("model") != "user":
                return 400, b'{"error": "unknown model"}'
            return 200, orjson.dumps({"counts": {"user": self.user_count}})
        return 404, b'{"error": "not found"}'

    def _apps_page(self, args):
        try:
            batch_size = int(args.get("batch_size") or "")
            token = orjson.loads(args.get("bulk_token") or "{}")
            token_id = int(token.get("id") or 0) if isinstance(token, dict) else 0
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return 400, b'{"error": "bad batch_size or bulk_token"}'
        if batch_size < 1:
            return 400, b'{"error": "batch_size must be positive"}'
        results, last_id = self.bulk_page(token_id, batch_size)
        return 200, orjson.dumps({"results": results, "bulk_token": {"id": last_id}})


class BulkApiResource(resource.Resource):
    """`/bulk/apps` and `/bulk/counts` over HTTP: the CC's bulk_request() behind twisted.web."""

    isLeaf = True

    def __init__(self, cc):
        super().__init__()
        self._cc = cc

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        args = {name.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
                for name, values in request.args.items() if values}
        answer = self._cc.bulk_request(request.path.decode("utf-8", "replace"), args,
                                       (request.getHeader("authorization") or "").strip())
        if answer is None:
            return server.NOT_DONE_YET
        code, body = answer
        request.setResponseCode(code)
        return body


def _decode(data):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None

