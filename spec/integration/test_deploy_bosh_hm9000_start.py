"""The health_manager_hm9000 job started on a realistic cf-release v2xx manifest (issue 20):
hm9000_realistic.yml with the listener TLS a v235+ manifest carries (a server certificate
for the HM, a DEA's client certificate, one CA) and etcd over TLS, rendered with Ruby's
ERB, laid out as on a VM and started by the job's ctl against a real nats-server and a
real etcd; then what the Cloud Controller, the DEAs and an operator see of it, and
`ctl stop`.

Of the fragment's two NATS machines only the second, 127.0.0.2, runs a nats-server, as
while BOSH recreates the first: the HM, whichever it tries first, ends up on that one.

Ports: those that are properties (nats.port, hm9000.port, the status port) are set to
free ones in the fragment. The job fixes two: the listener's 5335 (where DEAs of v235+
post) and etcd's 4001 (HM9000's client port), and the fragment names etcd by its consul
name, which resolves only inside a foundation. Other sessions' tests on this machine may
hold 5335 or 4001, so the test rewrites those two values of the rendered config (each
checked first as rendered) to free loopback ports before the start.
"""

import os
import re
import socket
import time

import orjson
import treq
import yaml
from OpenSSL import SSL
from twisted.internet import defer, reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from health_manager.bus import NatsBus
from health_manager.contracts.hm9000.gauges import NAMES as GAUGE_NAMES
from health_manager.simulation.etcd_server import EtcdServer
from health_manager.simulation.nats_server import NatsServer, free_port
from spec.integration.bosh_support import PemAuthority, alive, fragment, varz_when, wait_healthz
from spec.integration.hm9000_support import ClientTls, entry, heartbeat, https_client
from spec.integration.support import Recorder, connected, wait_until
from spec.integration.test_deploy_bosh_hm9000 import CONFIG, HEARTBEAT_PORT, ctl, install

NATS_MACHINES = ("127.0.0.1", "127.0.0.2")  # hm9000_realistic.yml's nats.machines
NATS_RUNNING = "127.0.0.2"
RENDERED_ETCD = "https://cf-etcd.service.cf.internal:4001"


def _free_on_every(hosts):
    """A TCP port free on each of `hosts`: the one nats.port of every NATS machine."""
    while True:
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.create_server((host, port)):
                    pass
        except OSError:
            continue
        return port


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _rewritten(text, old, new):
    """`text` with its one `old` replaced by `new`; fails when `old` is not there once."""
    if text.count(old) != 1:
        raise AssertionError(f"{old!r} is not in the rendered config exactly once:\n{text}")
    return text.replace(old, new)


class Pems:
    """The PEM properties of one v235+ manifest, issued for this test: the heartbeat
    listener's (server certificate, CA) with a DEA's client certificate from that CA; the
    etcd servers' and the etcd client's from the etcd CA; and a client certificate from a
    CA the HM does not trust."""

    def __init__(self):
        self.listener_ca = PemAuthority("hm9000 CA")
        self.server = self.listener_ca.issue("listener-hm9000.service.cf.internal")
        self.dea = self.listener_ca.issue("dea-next")
        self.etcd_ca = PemAuthority("etcd CA")
        self.etcd_server = self.etcd_ca.issue("cf-etcd.service.cf.internal")
        self.etcd_client = self.etcd_ca.issue("clientName")
        self.stranger = PemAuthority("another CA").issue("dea-next")

    def properties(self):
        return {
            "hm9000.server_cert": self.server[0], "hm9000.server_key": self.server[1],
            "hm9000.ca_cert": self.listener_ca.ca_pem,
            "hm9000.etcd.ca_cert": self.etcd_ca.ca_pem,
            "hm9000.etcd.client_cert": self.etcd_client[0],
            "hm9000.etcd.client_key": self.etcd_client[1],
        }

    def dea_tls(self, pair):
        """A DEA's TLS (ClientTls): trusts the listener's CA, presents `pair`."""
        return ClientTls(ssl.Certificate.loadPEM(self.listener_ca.ca_pem.encode()),
                         ssl.PrivateCertificate.loadPEM("".join(pair).encode()))


class RealisticStartTests(TestCase):
    timeout = 60

    def start_etcd(self, pems):
        """A real etcd asking for the etcd CA's client certificates (as cf's etcd-release
        with require_ssl), on a free loopback port."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        etcd = EtcdServer(os.path.join(directory, "data"), tls={
            "ca_file": _write(directory, "ca.pem", pems.etcd_ca.ca_pem),
            "cert_file": _write(directory, "server.pem", pems.etcd_server[0]),
            "key_file": _write(directory, "server.key", pems.etcd_server[1]),
            "client_cert_file": _write(directory, "client.pem", pems.etcd_client[0]),
            "client_key_file": _write(directory, "client.key", pems.etcd_client[1])})
        self.addCleanup(etcd.stop)
        return etcd.start()

    async def observe_heartbeats(self, nats):
        """A NATS subscriber to dea.heartbeat on the running nats-server."""
        observer = NatsBus(reactor, nats.url, name="heartbeat-observer")
        self.addCleanup(observer.stop)
        await connected(observer)
        recorder = Recorder()
        await observer.subscribe("dea.heartbeat", recorder)
        await observer.flush()
        return recorder

    async def status(self, path):
        """(code, body) of the status port's `path`, with the fragment's status auth."""
        status = self.config["status"]
        response = await treq.get(f"http://127.0.0.1:{status['port']}{path}",
                                  auth=(status["user"], status["password"]), persistent=False)
        return response.code, await treq.content(response)

    async def bulk_app_state(self, auth):
        """(code, headers, body) of the CC's POST /bulk_app_state on the rendered port."""
        hm9000 = self.config["hm9000"]
        response = await treq.post(
            f"http://127.0.0.1:{hm9000['api_port']}/bulk_app_state",
            data=orjson.dumps([{"droplet": "app-1", "version": "v1"}]), auth=auth,
            persistent=False)
        return response.code, response.headers, await treq.content(response)

    async def post_heartbeat(self, tls, body):
        client, pool = https_client(reactor, tls)
        self.addCleanup(pool.closeCachedConnections)
        port = self.config["hm9000"]["heartbeat_port"]
        response = await client.post(f"https://127.0.0.1:{port}/dea/heartbeat", data=body,
                                     headers={"Content-Type": "application/json"})
        return response.code

    async def test_realistic_fragment_serves_cc_deas_and_operator(self):
        """/healthz ok; /varz names the NATS machine it is on, carries HM9000's gauges and
        leads on the etcd; the CC's API refuses no credentials (401, challenge) and answers
        the rendered ones; a DEA's HTTPS heartbeat with its client certificate gets 202 and
        reaches NATS as dea.heartbeat, one from another CA's certificate is refused at the
        handshake; `ctl stop` ends the HM cleanly."""
        pems = Pems()
        etcd = self.start_etcd(pems)
        nats_port = _free_on_every(NATS_MACHINES)
        data = fragment("hm9000_realistic", **pems.properties(), **{
            "nats.port": nats_port, "hm9000.port": free_port(),
            # Nothing listens there: the desired state stays unloaded, which /healthz
            # forgives for desired_state_lost after the start.
            "cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
            "health_manager.status.port": free_port()})
        properties = data["properties"]
        nats = NatsServer(port=nats_port, host=NATS_RUNNING, user=properties["nats"]["user"],
                          password=properties["nats"]["password"]).start()
        self.addCleanup(nats.stop)
        vcap = install(self, data)
        heartbeat_port = free_port()
        text = _rewritten(vcap.config_text, f"heartbeat_port: {HEARTBEAT_PORT}\n",
                          f"heartbeat_port: {heartbeat_port}\n")
        text = _rewritten(text, RENDERED_ETCD, etcd.url)
        vcap.config = self.config = yaml.safe_load(vcap.write(CONFIG, text))
        recorder = await self.observe_heartbeats(nats)

        started = time.monotonic()
        self.addCleanup(ctl, vcap, "stop")
        code, output = await ctl(vcap, "start")
        self.assertEqual(code, 0, output + vcap.log("health_manager.stderr.log"))
        with open(self.config["pid"]) as f:
            pid = int(f.read())

        await wait_healthz(self, self.status)
        varz = await varz_when(self, self.status,
                               lambda v: v["nats_server"] and v["ha_role"] == "leader")
        self.assertEqual(varz["nats_server"], f"nats://nats:***@{NATS_RUNNING}:{nats_port}")
        self.assertEqual(varz["index"], 1)
        # HM9000's ten gauges under their names, unknown (-1) until both states are fresh.
        self.assertEqual({name: varz.get(name) for name in GAUGE_NAMES},
                         dict.fromkeys(GAUGE_NAMES, -1))
        self.assertEqual(etcd.get("/health_manager/leader")["value"], varz["uuid"])

        # The CC's side: the challenge without credentials, an answer with the rendered
        # cc.internal_api_user/password ({}: HM9000's reply while its store is not fresh).
        code, headers, body = await self.bulk_app_state(auth=None)
        self.assertEqual((code, body), (401, b""))
        self.assertEqual(headers.getRawHeaders("WWW-Authenticate"),
                         ['Basic realm="API Authentication"'])
        cc = properties["cc"]
        code, _, body = await self.bulk_app_state(
            auth=(cc["internal_api_user"], cc["internal_api_password"]))
        self.assertEqual(code, 200, body)
        self.assertEqual(orjson.loads(body), {})

        # A DEA's side: its heartbeat over mutual TLS is taken and relayed onto NATS.
        body = orjson.dumps(heartbeat("dea-next-0", entry("g0", 0)))
        self.assertEqual(await self.post_heartbeat(pems.dea_tls(pems.dea), body), 202)
        await wait_until(lambda: recorder.messages, what="dea.heartbeat on nats-server")
        self.assertEqual([(subject, payload) for _, subject, payload in recorder.messages],
                         [("dea.heartbeat", orjson.loads(body))])
        failure = await self.assertFailure(
            defer.ensureDeferred(self.post_heartbeat(pems.dea_tls(pems.stranger), body)),
            ResponseNeverReceived)
        errors = [reason.value for reason in failure.reasons]
        self.assertTrue(errors and all(isinstance(e, SSL.Error) for e in errors), errors)
        self.assertIn("unknown ca", str(errors[0]))
        varz = await varz_when(self, self.status, lambda v: v["https_tls_failures"] == 1)
        self.assertEqual((varz["https_heartbeats_received"], varz["https_heartbeats_relayed"]),
                         (1, 1))
        self.assertEqual(len(recorder.messages), 1)
        # The HM takes the rendered config whole (an unknown or unused key would be warned
        # about): its one warning is the refused handshake's.
        warnings = re.findall(r"#warn\] (.*)", vcap.log())
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("a DEA must present a client certificate", warnings[0])

        code, output = await ctl(vcap, "stop")
        self.assertEqual(code, 0, output)
        self.assertNotIn("SIGKILL", output)
        self.assertFalse(alive(pid))
        self.assertFalse(os.path.exists(self.config["pid"]))
        self.assertIn("health manager stopped", vcap.log())
        print(f"\nstarted, checked and stopped in {time.monotonic() - started:.1f} s")
