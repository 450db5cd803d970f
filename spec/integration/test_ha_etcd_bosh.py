"""An HA fragment of the health_manager_hm9000 BOSH job leads on a real etcd (issue 20):
hm9000.etcd.machines with require_ssl and the manifest's client certificate, rendered with
Ruby's ERB, started with the job's ctl, against an etcd that asks for that certificate.

The job names every etcd machine with HM9000's client port, 4001: the etcd here listens
on 127.0.0.1:4001.
"""

import os

import treq
from twisted.trial.unittest import TestCase

from health_manager.simulation.etcd_server import EtcdServer
from health_manager.simulation.nats_server import free_port
from spec.integration.bosh_support import PemAuthority, fragment, varz_when
from spec.integration.test_deploy_bosh_hm9000 import ctl, install

ETCD_PORT = 4001
STATUS_USER, STATUS_PASSWORD = "hm", "hm-status-secret"


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Hm9000EtcdTests(TestCase):
    timeout = 60

    async def test_ha_fragment_leads_on_etcd_with_client_tls(self):
        """The rendered config names https://127.0.0.1:4001 and the job's PEM files; the
        started HM, alone, holds the lease: etcd's leader key names its uuid and its epoch
        is that key's createdIndex."""
        authority = PemAuthority("etcd CA")
        server_cert, server_key = authority.issue("cf-etcd")
        client_cert, client_key = authority.issue("clientName")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        etcd = EtcdServer(os.path.join(directory, "data"), port=ETCD_PORT, tls={
            "ca_file": _write(directory, "ca.pem", authority.ca_pem),
            "cert_file": _write(directory, "server.pem", server_cert),
            "key_file": _write(directory, "server.key", server_key),
            "client_cert_file": _write(directory, "client.pem", client_cert),
            "client_key_file": _write(directory, "client.key", client_key)})
        self.addCleanup(etcd.stop)
        etcd.start()
        status_port = free_port()
        data = fragment("hm9000_defaults", **{
            "nats.port": free_port(), "hm9000.port": free_port(),
            "cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
            "health_manager.status.port": status_port,
            "health_manager.status.user": STATUS_USER,
            "health_manager.status.password": STATUS_PASSWORD,
            "hm9000.etcd.machines": ["127.0.0.1"], "hm9000.etcd.require_ssl": True,
            "hm9000.etcd.ca_cert": authority.ca_pem, "hm9000.etcd.client_cert": client_cert,
            "hm9000.etcd.client_key": client_key})
        vcap = install(self, data)
        self.assertEqual(vcap.config["ha"]["etcd"], [f"https://127.0.0.1:{ETCD_PORT}"])
        self.addCleanup(ctl, vcap, "stop")
        code, output = await ctl(vcap, "start")
        self.assertEqual(code, 0, output)
        varz = await varz_when(self, lambda path: self.status(status_port, path),
                               lambda v: v.get("ha_role") == "leader", timeout=20)
        leader = etcd.get("/health_manager/leader")
        self.assertEqual(leader["value"], varz["uuid"])
        self.assertEqual(varz["ha_epoch"], leader["createdIndex"])
        self.assertIn(f"HA: etcd member https://127.0.0.1:{ETCD_PORT} answering", vcap.log())

    async def status(self, port, path):
        response = await treq.get(f"http://127.0.0.1:{port}{path}",
                                  auth=(STATUS_USER, STATUS_PASSWORD), persistent=False)
        return response.code, await response.content()
