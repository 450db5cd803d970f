"""Integration: DEA heartbeats over HTTPS (HM9000.md §3.2) with real mutual TLS on loopback
(certificates made by the test: health_manager/testing/tls.py), relayed on a real
nats-server to every health manager, the receiving one included, which ingest them
through NATS alone."""

import os
import subprocess
import sys

import orjson
import treq
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from health_manager.bus import NatsBus
from health_manager.config import build_config
from health_manager.manager import Manager
from health_manager.simulation.nats_server import NatsServer
from spec.integration.hm9000_support import (
    API_PASSWORD,
    API_USER,
    DROPLET_LOST,
    Certificates,
    ClientTls,
    Hm9000Stack,
    entry,
    heartbeat,
    https_client,
)
from spec.integration.support import (
    ROOT,
    TWISTD,
    LogCapture,
    Recorder,
    connected,
    wait_until,
    write_config,
)


class HttpsHeartbeatTests(TestCase):
    timeout = 60

    async def foundation(self, standbys=0):
        """A nats-server; a health manager with the listener (`self.hm`) and `standbys`
        without one; a NATS subscriber to dea.heartbeat (`self.recorder`)."""
        self.certificates = Certificates(self.mktemp())
        self.nats = NatsServer().start()
        self.addCleanup(self.nats.stop)
        self.hm = Hm9000Stack(reactor, self.nats.url, self.certificates)
        self.addCleanup(self.hm.stop)
        await self.hm.start()
        self.standbys = []
        for _ in range(standbys):
            standby = Hm9000Stack(reactor, self.nats.url)
            self.addCleanup(standby.stop)
            self.standbys.append(await standby.start())
        observer = NatsBus(reactor, self.nats.url, name="observer")
        self.addCleanup(observer.stop)
        await connected(observer)
        self.recorder = Recorder()
        await observer.subscribe("dea.heartbeat", self.recorder)
        await observer.flush()
        return self.hm

    def dea(self, certificate="valid"):
        """An HTTPS client as a DEA: trusting the CA, presenting a client certificate the
        CA signed ("valid"), one another CA signed ("foreign"), or none (None)."""
        certificates = self.certificates
        chosen = {"valid": certificates.client, "foreign": certificates.foreign_client,
                  None: None}[certificate]
        client, pool = https_client(reactor, ClientTls(certificates.authority, chosen))
        self.addCleanup(pool.closeCachedConnections)
        return client

    async def post(self, client, body, path="/dea/heartbeat", method="POST"):
        response = await client.request(
            method, f"https://127.0.0.1:{self.hm.listener.port}{path}", data=body,
            headers={"Content-Type": "application/json"})
        return response.code, await treq.content(response)

    async def test_relayed_on_nats_and_ingested_once_by_every_hm(self):
        """202; the exact bytes reach a NATS subscriber; the receiving HM and a standby
        each ingest the heartbeat once (through NATS), and both list it with its DEA."""
        hm = await self.foundation(standbys=1)
        for stack in (hm, *self.standbys):
            stack.desire("app-1", instances=2)
        body = orjson.dumps(heartbeat("dea-https", entry("g0", 0), entry("g1", 1)))
        client = self.dea()
        self.assertEqual(await self.post(client, body), (202, b""))
        await wait_until(lambda: self.recorder.payloads("dea.heartbeat"), what="relayed")
        for stack in (hm, *self.standbys):
            await wait_until(lambda s=stack: s.metrics.heartbeat_msgs_received == 1,
                             what="heartbeat ingested")
        self.assertEqual([m for _, s, m in self.recorder.messages], [orjson.loads(body)])
        self.assertEqual((hm.counters.https_heartbeats_received,
                          hm.counters.https_heartbeats_relayed), (1, 1))
        for stack in (hm, *self.standbys):
            await stack.fresh()
            self.assertEqual(stack.metrics.heartbeat_msgs_received, 1)
            _, _, reply = await stack.bulk_app_state([{"droplet": "app-1",
                                                       "version": "v1"}])
            self.assertEqual(
                sorted((b["dea_guid"], b["instance"])
                       for b in orjson.loads(reply)["app-1"]["instance_heartbeats"]),
                [("dea-https", "g0"), ("dea-https", "g1")])
        # Keep-alive as the DEA uses it: a second heartbeat on the same client.
        self.assertEqual((await self.post(client, body))[0], 202)
        await wait_until(lambda: hm.metrics.heartbeat_msgs_received == 2, what="second")

    async def test_bad_body_400_and_routes(self):
        """A body that is not a heartbeat answers 400, one NATS could not carry 413; neither
        is relayed. Another path 404, another method 405."""
        hm = await self.foundation()
        client = self.dea()
        for body in (b"", b"nope", b"[1]", b'{"dea": "d"}', b'{"droplets": 5}'):
            self.assertEqual((await self.post(client, body))[0], 400, body)
        too_large = orjson.dumps(heartbeat("dea-1", *[entry(f"g{n:05d}", n)
                                                      for n in range(8000)]))
        self.assertEqual((await self.post(client, too_large))[0], 413)
        self.assertEqual((await self.post(client, b"{}", path="/other"))[0], 404)
        self.assertEqual((await self.post(client, b"", method="GET"))[0], 405)
        self.assertEqual(hm.counters.https_heartbeats_rejected, {"bad_body": 5,
                                                                 "too_large": 1})
        self.assertEqual(hm.counters.https_heartbeats_received, 6)
        await hm.bus.flush()
        self.assertEqual(self.recorder.messages, [])

    async def test_client_certificate_required_and_verified(self):
        """Without a client certificate, or with one from another CA, the TLS handshake
        fails: no HTTP status at all, nothing relayed; a log line and a counter each."""
        hm = await self.foundation()
        self.log = LogCapture()
        self.addCleanup(self.log.stop)
        body = orjson.dumps(heartbeat("dea-1", entry("g0", 0)))
        # The server's TLS alert, as the client reads it (TLS 1.3: after its Finished).
        for certificate, alert in ((None, "certificate required"), ("foreign", "unknown ca")):
            failure = await self.assertFailure(
                defer.ensureDeferred(self.post(self.dea(certificate), body)),
                ResponseNeverReceived)
            errors = [reason.value for reason in failure.reasons]
            self.assertTrue(errors and all(isinstance(e, SSL.Error) for e in errors), errors)
            self.assertIn(alert, str(errors[0]))
        self.assertEqual(hm.counters.https_heartbeats_received, 0)
        self.assertEqual(self.recorder.messages, [])
        await wait_until(lambda: hm.counters.https_tls_failures == 2, what="TLS counted")
        self.assertEqual(self.log.count("a DEA must present a client certificate"), 2)
        self.assertEqual((await self.post(self.dea(), body))[0], 202)

    async def test_nats_disconnected_answers_503(self):
        """With NATS down the heartbeat cannot be relayed: 503, counted. (The DEA does not
        retry; its next heartbeat brings its whole list again.)"""
        hm = await self.foundation()
        self.nats.stop()
        await wait_until(lambda: not hm.bus.connected, what="HM disconnected")
        body = orjson.dumps(heartbeat("dea-1", entry("g0", 0)))
        self.assertEqual((await self.post(self.dea(), body))[0], 503)
        self.assertEqual(hm.counters.https_heartbeats_rejected, {"nats_disconnected": 1})
        self.assertEqual(hm.counters.https_heartbeats_relayed, 0)


class ManagerTests(TestCase):
    timeout = 60

    async def test_manager_serves_hm9000s_side(self):
        """The Manager with `cc_protocol: hm9000` and the `hm9000` section: a DEA's HTTPS
        heartbeat comes back, through NATS and the Manager's ingest, in its
        `POST /bulk_app_state` reply (the bulk API is unreachable: not desired)."""
        certificates = Certificates(self.mktemp())
        nats = NatsServer().start()
        self.addCleanup(nats.stop)
        config, _warnings = build_config({
            "mbus": nats.url, "cc_protocol": "hm9000", "local_route": "127.0.0.1",
            "bulk_api": {"host": "http://127.0.0.1:1", "user": "bulk_api", "password": "x"},
            "status": {"port": 0, "user": "u", "password": "p"},
            "intervals": {"droplet_lost": DROPLET_LOST},
            "hm9000": {"api_port": 0, "api_address": "127.0.0.1", "api_user": API_USER,
                       "api_password": API_PASSWORD, "heartbeat_port": 0,
                       "heartbeat_address": "127.0.0.1",
                       "ssl": {"cert_file": certificates.cert_file,
                               "key_file": certificates.key_file,
                               "ca_file": certificates.ca_file}}}, {})
        manager = Manager(config, reactor)
        manager.startService()
        self.addCleanup(manager.stopService)
        await wait_until(lambda: manager.bus.connected, what="HM connected")
        await manager._started
        servers = manager.hm9000_servers
        client, pool = https_client(reactor, ClientTls(certificates.authority,
                                                       certificates.client))
        self.addCleanup(pool.closeCachedConnections)
        body = orjson.dumps(heartbeat("dea-https", entry("g0", 0)))
        response = await client.post(f"https://127.0.0.1:{servers.listener.port}"
                                     "/dea/heartbeat", data=body)
        self.assertEqual(response.code, 202)
        await wait_until(lambda: manager.metrics.heartbeat_msgs_received == 1,
                         what="heartbeat ingested")
        await wait_until(manager.freshness.is_fresh, what="fresh")
        response = await client.post(f"https://127.0.0.1:{servers.listener.port}"
                                     "/dea/heartbeat", data=body)
        self.assertEqual(response.code, 202)  # the DEA's next one: within droplet_lost
        await wait_until(lambda: manager.metrics.heartbeat_msgs_received == 2,
                         what="heartbeat ingested again")
        response = await treq.post(
            f"http://127.0.0.1:{servers.api.port}/bulk_app_state",
            data=orjson.dumps([{"droplet": "app-1", "version": "v1"}]),
            auth=(API_USER, API_PASSWORD), persistent=False)
        reply = orjson.loads(await treq.content(response))
        self.assertEqual([(b["dea_guid"], b["instance"])
                          for b in reply["app-1"]["instance_heartbeats"]],
                         [("dea-https", "g0")])
        self.assertEqual(manager.metrics.varz()["https_heartbeats_relayed"], 2)

    def test_unusable_tls_file_stops_the_start_with_one_line(self):
        """A PEM file that is readable but holds no key: `twistd health_manager` exits 1
        with one line naming `hm9000.ssl.key_file`."""
        certificates = Certificates(os.path.abspath(self.mktemp()))
        path = write_config(
            self, cc_protocol="hm9000",
            bulk_api={"host": "http://127.0.0.1:1", "user": "bulk_api", "password": "x"},
            hm9000={"api_port": 0, "api_user": API_USER, "api_password": API_PASSWORD,
                    "heartbeat_port": 0,
                    "ssl": {"cert_file": certificates.cert_file,
                            "key_file": certificates.cert_file,
                            "ca_file": certificates.ca_file}})
        result = subprocess.run(
            [sys.executable, TWISTD, "-n", "--pidfile=", "health_manager", "-c", path],
            capture_output=True, text=True, cwd=ROOT, timeout=30,
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stderr.strip().count("\n"), 0, result.stderr)
        self.assertIn("'hm9000.ssl.key_file'", result.stderr)
