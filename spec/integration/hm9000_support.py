"""The HM9000 contract's servers wired as a health manager wires them, on the asyncio
reactor and a real nats-server: ActualState feeding the heartbeat ledger, the NATS and HTTP
app-state APIs, the HTTPS heartbeat listener; and certificates made by the test
(health_manager/testing/tls.py, with `cryptography`, which Twisted[tls] already installs).
"""

from types import SimpleNamespace

import orjson
import treq
from treq.client import HTTPClient
from twisted.internet import defer, ssl
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from health_manager.actual_state import ActualState
from health_manager.bus import NatsBus
from health_manager.contracts.hm9000.servers import Hm9000Servers
from health_manager.freshness import ActualFreshness
from health_manager.harmonizer import Harmonizer
from health_manager.metrics import Metrics
from health_manager.model.desired_app import DesiredApp
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.desired import FakeDesiredState
from health_manager.testing.tls import tls_files
from spec.integration.support import wait_until
from spec.unit.policy_rig import make_config

API_USER, API_PASSWORD = "internal_user", "api-Pa55-never-shown"
DROPLET_LOST = 1.0


class Certificates:
    """A CA, a server certificate for 127.0.0.1 and a DEA client certificate it signed,
    as files for the listener and as Twisted objects for the clients; plus a client
    certificate from another CA."""

    def __init__(self, directory):
        files = tls_files(directory)
        self.cert_file = files["server_cert"]
        self.key_file = files["server_key"]
        self.ca_file = files["ca_file"]
        self.client = _private(files["client_cert"], files["client_key"])
        self.foreign_client = _private(files["stranger_cert"], files["stranger_key"])
        self.authority = ssl.Certificate.loadPEM(_read(self.ca_file))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _private(cert_file, key_file):
    return ssl.PrivateCertificate.loadPEM(_read(cert_file) + _read(key_file))


@implementer(IPolicyForHTTPS)
class ClientTls:
    """A DEA's TLS: trusts `authority`, presents `certificate` (or none)."""

    def __init__(self, authority, certificate=None):
        self._authority = authority
        self._certificate = certificate

    def creatorForNetloc(self, hostname, port):  # noqa: N802 (Twisted's interface)
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._authority,
                                       clientCertificate=self._certificate)


def https_client(reactor, policy):
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool)), pool


class Hm9000Stack:
    """One health manager's HM9000 contract servers on `nats_url`, a Manager's wiring in
    small: `await start()`, then `stop()` in the test's cleanup."""

    def __init__(self, reactor, nats_url, certificates=None, api_port=0):
        self.reactor = reactor
        config = make_config({"droplet_lost": DROPLET_LOST})
        intervals = config.intervals
        self.metrics = Metrics()
        self.scheduler = Scheduler(reactor)
        self.bus = NatsBus(reactor, nats_url, name="hm9000-stack")
        self.registry = DropletRegistry()
        self.freshness = ActualFreshness(self.scheduler, intervals.droplet_lost)
        nudger = Nudger(self.scheduler, self.bus, self.metrics, intervals.queue_batch_size,
                        intervals.request_queue)
        harmonizer = Harmonizer(config, self.scheduler, self.registry, nudger,
                                FakeDesiredState(), self.freshness, self.metrics)
        # The `hm9000` config section as the Manager passes it (Hm9000Config's fields).
        ssl = None if certificates is None else SimpleNamespace(
            cert_file=certificates.cert_file, key_file=certificates.key_file,
            ca_file=certificates.ca_file)
        section = SimpleNamespace(
            api_port=api_port, api_address="127.0.0.1", api_user=API_USER,
            api_password=API_PASSWORD, heartbeat_address="127.0.0.1", ssl=ssl,
            heartbeat_port=None if certificates is None else 0)
        self.servers = Hm9000Servers(section, reactor, reactor, self.bus, self.registry,
                                     self.freshness, self.metrics, intervals.droplet_lost,
                                     intervals.flapping_timeout)
        self.api = self.servers.api
        self.listener = self.servers.listener
        self.actual_state = ActualState(config, self.bus, self.registry, harmonizer,
                                        self.freshness, self.metrics, self.scheduler,
                                        heartbeat_observer=self.servers.ledger.on_heartbeat)
        self.http_pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=self.http_pool))

    @property
    def counters(self):
        return self.metrics.hm9000

    async def start(self):
        self.bus.start()
        await wait_until(lambda: self.bus.connected, what="stack connected to NATS")
        await defer.gatherResults([self.actual_state.subscribe(), self.servers.subscribe()])
        await self.bus.flush()
        for service in self.servers.services:
            service.startService()
        return self

    async def stop(self):
        await self.scheduler.stop()  # the crash restarts the policy scheduled
        for service in self.servers.services:
            await service.stopService()
        await self.bus.stop()
        await self.http_pool.closeCachedConnections()

    def desire(self, guid, instances, version="v1", package_state="STAGED"):
        self.registry.apply_desired(
            DesiredApp(id=guid, state="STARTED", instances=instances, version=version,
                       package_state=package_state, updated_at=1, memory=256),
            self.scheduler.now())

    async def fresh(self):
        await wait_until(self.freshness.is_fresh, what="actual state fresh")

    async def bulk_app_state(self, body, auth=(API_USER, API_PASSWORD), method="POST",
                             path="/bulk_app_state"):
        """(status, headers, body bytes) of a request to the app-state API."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await self.http.request(
            method, f"http://127.0.0.1:{self.api.port}{path}", data=data, auth=auth)
        return response.code, response.headers, await treq.content(response)


def heartbeat(dea, *entries):
    return {"dea": dea, "prod": False, "droplets": list(entries)}


def entry(guid, index, droplet="app-1", version="v1", state="RUNNING", ts=1000.5):
    return {"cc_partition": "default", "droplet": droplet, "version": version,
            "instance": guid, "index": index, "state": state, "state_timestamp": ts}
