"""Simulated DEAs heartbeating over HTTPS with client certificates (HM9000.md §3.2) on
loopback: against a plain mutual-TLS recording server (what goes on the wire), and against
the health manager's own listener (contracts/hm9000/heartbeat_listener.py)."""

import os

import orjson
from twisted.internet import reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from health_manager.contracts.hm9000.heartbeat_listener import HeartbeatListener
from health_manager.metrics import Hm9000Counters
from health_manager.simulation.certificates import (
    client_tls_options,
    listener_ssl_config,
    make_certificates,
)
from health_manager.simulation.dea import SimulatedDea
from health_manager.simulation.heartbeats import HttpsHeartbeats
from health_manager.testing.bus import InMemoryBus
from spec.integration.support import wait_until


class RecordingListener(resource.Resource):
    """POST /dea/heartbeat: records each request and answers `code`."""

    isLeaf = True

    def __init__(self, code=202):
        super().__init__()
        self.code = code
        self.requests = []

    def render_POST(self, request):
        peer = request.transport.getPeerCertificate()
        self.requests.append({
            "path": request.path,
            "content_type": request.getHeader("content-type"),
            "body": orjson.loads(request.content.read()),
            "client": peer.get_subject().CN if peer is not None else None,
            "connection": id(request.channel),
        })
        request.setResponseCode(self.code)
        return b""


class HeartbeatCase(TestCase):
    timeout = 30

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        self.files = make_certificates(directory)
        self.bus = InMemoryBus(reactor)
        self.bus.start()

    def dea(self, url, cert="client_cert", key="client_key"):
        sender = HttpsHeartbeats(reactor, url, client_tls_options(self.files, cert=cert,
                                                                  key=key))
        dea = SimulatedDea(self.bus, reactor, "dea-https", heartbeat_interval=60,
                           startup_delay=60, heartbeats=sender)
        dea.start()
        self.addCleanup(dea.stop)
        dea.start_instance("app-1", "v1", 0)
        return dea, sender


class OnTheWireTests(HeartbeatCase):
    def setUp(self):
        super().setUp()
        self.listener = RecordingListener()
        with open(self.files["server_cert"], "rb") as f:
            cert = f.read()
        with open(self.files["server_key"], "rb") as f:
            key = f.read()
        with open(self.files["ca_file"], "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        # The CA given to options() makes the server require and verify client certs.
        options = ssl.PrivateCertificate.loadPEM(cert + key).options(ca)
        port = reactor.listenSSL(0, server.Site(self.listener), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"https://127.0.0.1:{port.getHost().port}"

    async def test_heartbeat_posted_with_client_certificate(self):
        """The body is the dea.heartbeat payload as JSON, with the DEA's client
        certificate; a 202 counts as accepted; nothing goes on NATS."""
        dea, sender = self.dea(self.url)
        dea.send_heartbeat()
        await wait_until(lambda: sender.accepted == 1, what="an accepted heartbeat")
        [request] = self.listener.requests
        self.assertEqual(request["path"], b"/dea/heartbeat")
        self.assertEqual(request["content_type"], "application/json")
        self.assertEqual(request["body"], dea.heartbeat_payload())
        self.assertEqual(request["client"], "hm-test-client")
        self.assertEqual(self.bus.published_json("dea.heartbeat"), [])

    async def test_keep_alive(self):
        """Heartbeats reuse one TLS connection."""
        dea, sender = self.dea(self.url)
        for expected in (1, 2, 3):
            dea.send_heartbeat()
            await wait_until(lambda n=expected: sender.accepted == n, what="heartbeats")
        self.assertEqual(len({r["connection"] for r in self.listener.requests}), 1)

    async def test_refusal_is_counted(self):
        """Any status but 202 is a refusal, counted; the DEA goes on."""
        self.listener.code = 500
        dea, sender = self.dea(self.url)
        dea.send_heartbeat()
        await wait_until(lambda: sender.refused == 1, what="a refused heartbeat")
        self.assertEqual((sender.accepted, sender.failed), (0, 0))


class HealthManagerListenerTests(HeartbeatCase):
    """The simulated DEA and the health manager's listener agree on the contract."""

    def setUp(self):
        super().setUp()
        self.counters = Hm9000Counters()
        listener = HeartbeatListener(reactor, self.bus, self.counters, 0, "127.0.0.1",
                                     **listener_ssl_config(self.files))
        listener.startService()
        self.addCleanup(listener.stopService)
        self.url = f"https://127.0.0.1:{listener.port}"

    async def test_relayed_as_the_nats_heartbeat(self):
        """202, and the very dea.heartbeat payload a NATS DEA would have sent."""
        dea, sender = self.dea(self.url)
        dea.send_heartbeat()
        await wait_until(lambda: sender.accepted == 1, what="an accepted heartbeat")
        self.assertEqual(self.bus.published_json("dea.heartbeat"), [dea.heartbeat_payload()])

    async def test_evacuating_heartbeat_relayed(self):
        """An evacuating DEA's EVACUATING heartbeat gets through as any other."""
        dea, sender = self.dea(self.url)
        dea.instances[next(iter(dea.instances))].state = "RUNNING"
        dea.evacuate_with_heartbeats(timeout=60)
        await wait_until(lambda: sender.accepted == 1, what="an accepted heartbeat")
        [beat] = self.bus.published_json("dea.heartbeat")
        self.assertEqual([e["state"] for e in beat["droplets"]], ["EVACUATING"])

    async def test_refused_while_nats_is_down(self):
        """The listener cannot relay without NATS: a counted refusal, not a failure."""
        self.bus.set_connected(False)
        dea, sender = self.dea(self.url)
        dea.send_heartbeat()
        await wait_until(lambda: sender.refused == 1, what="a refused heartbeat")

    async def test_certificate_of_another_ca_fails(self):
        """A client certificate the listener's CA did not sign fails the handshake: no
        HTTP status at all, a counted failure, nothing relayed."""
        _, sender = self.dea(self.url, cert="stranger_cert", key="stranger_key")
        sender.send({"dea": "dea-https", "droplets": []})
        await wait_until(lambda: sender.failed == 1, what="a failed heartbeat")
        self.assertEqual((sender.accepted, sender.refused), (0, 0))
        self.assertEqual(self.bus.published_json("dea.heartbeat"), [])
