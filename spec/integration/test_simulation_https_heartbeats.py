"""Simulated DEAs heartbeating over HTTPS with client certificates (HM9000.md §3.2), against
a real mutual-TLS server on loopback made with the certificates of
health_manager.simulation.certificates."""

import os

import attrs
import orjson
from twisted.internet import defer, reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from health_manager.simulation.certificates import client_tls_options, make_certificates
from health_manager.simulation.dea import SimulatedDea
from health_manager.simulation.heartbeats import HttpsHeartbeats
from health_manager.testing.bus import InMemoryBus
from spec.integration.support import wait_until


class HeartbeatListener(resource.Resource):
    """POST /dea/heartbeat: records each request and answers `code`."""

    isLeaf = True

    def __init__(self, code=202):
        super().__init__()
        self.code = code
        self.requests = []
        self._waiting = []

    def render_POST(self, request):
        peer = request.transport.getPeerCertificate()
        self.requests.append({
            "path": request.path,
            "content_type": request.getHeader("content-type"),
            "body": orjson.loads(request.content.read()),
            "client": peer.get_subject().CN if peer is not None else None,
            "connection": id(request.channel),
        })
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            reactor.callLater(0, d.callback, None)
        request.setResponseCode(self.code)
        return b""

    def next_request(self):
        d = defer.Deferred()
        self._waiting.append(d)
        return d.addTimeout(10, reactor)


class HttpsHeartbeatTests(TestCase):
    timeout = 30

    def setUp(self):
        self.files = make_certificates(self.mktemp_dir())
        self.listener = HeartbeatListener()
        with open(self.files.server_cert_file, "rb") as f:
            cert = f.read()
        with open(self.files.server_key_file, "rb") as f:
            key = f.read()
        with open(self.files.ca_file, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        # The CA given to options() makes the server require and verify client certs.
        options = ssl.PrivateCertificate.loadPEM(cert + key).options(ca)
        site = server.Site(self.listener)
        self.port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"https://127.0.0.1:{self.port.getHost().port}"
        self.bus = InMemoryBus(reactor)
        self.bus.start()

    def mktemp_dir(self):
        path = self.mktemp()
        os.makedirs(path)
        return path

    def dea(self, files=None):
        sender = HttpsHeartbeats(reactor, self.url,
                                 client_tls_options(files or self.files, "127.0.0.1"))
        dea = SimulatedDea(self.bus, reactor, "dea-https", heartbeat_interval=60,
                           startup_delay=60, heartbeats=sender)
        dea.start()
        self.addCleanup(dea.stop)
        dea.start_instance("app-1", "v1", 0)
        return dea, sender

    async def test_heartbeat_posted_with_client_certificate(self):
        """The body is the dea.heartbeat payload, as JSON, with the DEA's client
        certificate; a 202 counts as accepted; nothing goes on NATS."""
        dea, sender = self.dea()
        received = self.listener.next_request()
        dea.send_heartbeat()
        await received
        await wait_until(lambda: sender.accepted == 1)
        [request] = self.listener.requests
        self.assertEqual(request["path"], b"/dea/heartbeat")
        self.assertEqual(request["content_type"], "application/json")
        self.assertEqual(request["body"], dea.heartbeat_payload())
        self.assertEqual(request["client"], "simulated dea")
        self.assertEqual(self.bus.published_json("dea.heartbeat"), [])

    async def test_keep_alive(self):
        """Heartbeats reuse one TLS connection."""
        dea, sender = self.dea()
        for expected in (1, 2, 3):
            dea.send_heartbeat()
            await wait_until(lambda n=expected: sender.accepted == n)
        self.assertEqual(len({r["connection"] for r in self.listener.requests}), 1)

    async def test_refusal_is_counted(self):
        """Any status but 202 is a refusal, counted; the DEA goes on."""
        self.listener.code = 500
        dea, sender = self.dea()
        dea.send_heartbeat()
        await wait_until(lambda: sender.refused == 1)
        self.assertEqual((sender.accepted, sender.failed), (0, 0))

    async def test_certificate_of_another_ca_fails(self):
        """A client certificate the server's CA did not sign fails the handshake: no HTTP
        status at all, a counted failure."""
        other = make_certificates(self.mktemp_dir(), ca_name="other CA")
        # Trusting the right CA, so only the server's check of the client can fail.
        files = attrs.evolve(self.files, client_cert_file=other.client_cert_file,
                             client_key_file=other.client_key_file)
        _, sender = self.dea(files=files)
        sender.send({"dea": "dea-https", "droplets": []})
        await wait_until(lambda: sender.failed == 1)
        self.assertEqual(self.listener.requests, [])

