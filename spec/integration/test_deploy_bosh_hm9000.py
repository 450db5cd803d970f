"""The health_manager_hm9000 BOSH job: every template rendered with Ruby's ERB as the director
renders them, from cf-release v2xx property fragments (the hm9000 job's properties), and
what the rendered files do: the config HM9000's properties map to, the TLS files, the
properties without effect that the ctl script warns about at start, and the consul checks
behind hm9000.service.cf.internal and listener-hm9000.service.cf.internal, as
docs/replacing-hm9000.md declares them."""

import json
import os
import re
import socket
import ssl
import subprocess
from urllib.parse import urlsplit

import yaml
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import free_port
from spec.integration.bosh_support import (
    CTL,
    RENDERER,
    PemAuthority,
    ScratchVcap,
    debian_tool,
    fragment,
    with_properties,
)
from spec.integration.support import ROOT

JOB_DIR = os.path.join(ROOT, "deploy", "bosh", "jobs", "health_manager_hm9000")
JOB_SPEC = os.path.join(JOB_DIR, "spec")
JOB_CTL = os.path.join(JOB_DIR, "templates", "health_manager_ctl")
MONIT = os.path.join(JOB_DIR, "monit")
GUIDE = os.path.join(ROOT, "docs", "replacing-hm9000.md")
CONFIG = "config/health_manager.yml"
WITHOUT_EFFECT = "config/properties_without_effect"
CERTS = "/var/vcap/jobs/health_manager_hm9000/config/certs"
HEARTBEAT_PORT = 5335  # DEAs of v235+ POST to listener-hm9000.service.cf.internal:5335


def render_job(test, data):
    """Every template of the job rendered from the manifest fragment `data`: (exit code,
    {path in the job: text}, stderr)."""
    ruby = debian_tool("ruby", "ruby")
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    result = subprocess.run([ruby, RENDERER, "--all", JOB_SPEC, path],
                            capture_output=True, text=True, timeout=30)
    files = json.loads(result.stdout) if result.returncode == 0 else {}
    return result.returncode, files, result.stderr


def render_job_ok(test, data):
    code, files, err = render_job(test, data)
    test.assertEqual(code, 0, err)
    return files


def with_tls(data):
    """`data` with the PEM properties a v235+ manifest carries, issued by fresh CAs: the
    heartbeat listener's (hm9000.server_*, hm9000.ca_cert) and the etcd client's."""
    listener_ca, etcd_ca = PemAuthority("hm9000 CA"), PemAuthority("etcd CA")
    server_cert, server_key = listener_ca.issue("listener-hm9000.service.cf.internal")
    client_cert, client_key = etcd_ca.issue("clientName")
    return with_properties(data, {
        "hm9000.server_cert": server_cert, "hm9000.server_key": server_key,
        "hm9000.ca_cert": listener_ca.ca_pem,
        "hm9000.etcd.ca_cert": etcd_ca.ca_pem, "hm9000.etcd.client_cert": client_cert,
        "hm9000.etcd.client_key": client_key,
    })


def realistic(**properties):
    return with_tls(fragment("hm9000_realistic", **properties))


def install(test, data):
    """The job rendered from `data` and laid out as on a VM (ScratchVcap: its bin/, config/
    and config/certs/, the ctl, the health_manager package); the test starts the HM with
    `bash vcap.ctl start` in `vcap.env()`."""
    files = render_job_ok(test, data)
    return ScratchVcap(test, files.pop(CONFIG), job="health_manager_hm9000", files=files)


class RenderingTests(TestCase):
    timeout = 60

    def rendered(self, data):
        files = render_job_ok(self, data)
        return yaml.safe_load(files[CONFIG]), files

    def test_spec_defaults(self):
        """The least a v226 manifest sets: HM9000's defaults, mapped to our keys, with HA on
        the foundation's etcd (plain http from etcd.machines), no heartbeat listener."""
        config, files = self.rendered(fragment("hm9000_defaults"))
        self.assertEqual(config, {
            "cc_protocol": "hm9000",
            "mbus": "nats://nats:nats-secret@127.0.0.1:4222",
            "local_route": "127.0.0.1",
            "index": 0,
            "pid": "/var/vcap/sys/run/health_manager_hm9000/health_manager.pid",
            "logging": {"level": "info", "file":
                        "/var/vcap/sys/log/health_manager_hm9000/health_manager.log"},
            "bulk_api": {"host": "http://127.0.0.1:9022", "user": "bulk_api",
                         "password": "bulk-secret", "batch_size": 5000},
            "hm9000": {"api_port": 5155, "api_user": "internal_user",
                       "api_password": "internal-secret", "start_subject": "hm9000.start",
                       "stop_subject": "hm9000.stop"},
            # 3 heartbeats of 10 s; 60 starts per heartbeat period; HM9000's 30 s fetch timeout.
            "intervals": {"droplet_lost": 30, "queue_batch_size": 60, "request_queue": 10,
                          "bulk_request_timeout": 30},
            "ha": {"etcd": ["http://127.0.0.1:4001"], "lease_duration": 15,
                   "renew_deadline": 10, "retry_period": 2, "key_prefix": "health_manager"},
        })
        self.assertEqual(files[WITHOUT_EFFECT], "")
        self.assertEqual(files["config/syslog_forwarder.conf"], "")
        for name in ("server.key", "server.crt", "ca.crt", "etcd_client.key",
                     "etcd_client.crt", "etcd_ca.crt"):
            self.assertEqual(files[f"config/certs/{name}"].strip(), "", name)

    def test_realistic_manifest(self):
        """A v245+ manifest: both NATS machines in mbus (credentials with odd characters
        intact), the HTTPS heartbeat listener on 5335 with the PEMs written to the files the
        config names, etcd over TLS through its consul name, the status block."""
        data = realistic()
        config, files = self.rendered(data)
        properties = data["properties"]
        uris = [urlsplit(uri) for uri in config["mbus"].split(",")]
        self.assertEqual([(u.scheme, u.hostname, u.port) for u in uris],
                         [("nats", "127.0.0.1", 4222), ("nats", "127.0.0.2", 4222)])
        self.assertEqual({(u.username, u.password) for u in uris},
                         {("nats", "c1oudc0w:with'odd@chars")})
        self.assertEqual(config["index"], 1)
        self.assertEqual(config["local_route"], "127.0.0.1")
        self.assertEqual(config["bulk_api"]["host"], "https://api.cf.example.com")
        self.assertEqual(config["hm9000"], {
            "api_port": 5155, "api_user": "internal_user", "api_password": "internal-secret#1",
            "heartbeat_port": HEARTBEAT_PORT,
            "ssl": {"cert_file": f"{CERTS}/server.crt", "key_file": f"{CERTS}/server.key",
                    "ca_file": f"{CERTS}/ca.crt"},
            "start_subject": "hm9000.start", "stop_subject": "hm9000.stop"})
        self.assertEqual(config["ha"], {
            "etcd": ["https://cf-etcd.service.cf.internal:4001"],
            "etcd_ca_file": f"{CERTS}/etcd_ca.crt",
            "etcd_cert_file": f"{CERTS}/etcd_client.crt",
            "etcd_key_file": f"{CERTS}/etcd_client.key",
            "lease_duration": 15, "renew_deadline": 10, "retry_period": 2,
            "key_prefix": "health_manager"})
        self.assertEqual(config["status"], {"port": 54322, "user": "hm",
                                            "password": "hm-status-secret"})
        # Every file the config names is a rendered file holding its property's PEM.
        hm9000, etcd = properties["hm9000"], properties["hm9000"]["etcd"]
        expected = {
            config["hm9000"]["ssl"]["cert_file"]: hm9000["server_cert"],
            config["hm9000"]["ssl"]["key_file"]: hm9000["server_key"],
            config["hm9000"]["ssl"]["ca_file"]: hm9000["ca_cert"],
            config["ha"]["etcd_ca_file"]: etcd["ca_cert"],
            config["ha"]["etcd_cert_file"]: etcd["client_cert"],
            config["ha"]["etcd_key_file"]: etcd["client_key"],
        }
        prefix = "/var/vcap/jobs/health_manager_hm9000/"
        for path, pem in expected.items():
            self.assertEqual(files[path.removeprefix(prefix)].strip(), pem.strip(), path)

    def test_rendered_pems_make_a_mutual_tls_listener(self):
        """The rendered listener files, laid out as on the VM, serve mutual TLS: a client
        with a certificate from the same CA gets through the handshake (what a DEA does)."""
        vcap = install(self, realistic())
        tls = vcap.config["hm9000"]["ssl"]
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tls["cert_file"], tls["key_file"])
        server.load_verify_locations(tls["ca_file"])
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(tls["ca_file"])
        # The DEA's client certificate comes from the same CA: the server's pair serves here.
        client.load_cert_chain(tls["cert_file"], tls["key_file"])
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        server_side = server.wrap_socket(left, server_side=True, do_handshake_on_connect=False)
        client_side = client.wrap_socket(
            right, server_hostname="listener-hm9000.service.cf.internal",
            do_handshake_on_connect=False)
        for sock in (server_side, client_side):
            sock.setblocking(False)
        done = set()
        for _ in range(100):
            for side in (server_side, client_side):
                if side in done:
                    continue
                try:
                    side.do_handshake()
                    done.add(side)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if len(done) == 2:
                break
        self.assertEqual(len(done), 2, "handshake did not complete")
        self.assertEqual(server_side.getpeercert()["subject"],
                         ((("commonName", "listener-hm9000.service.cf.internal"),),))

    def test_heartbeat_period_and_limits_map_to_intervals(self):
        """dea_next.heartbeat_interval_in_seconds gives droplet_lost (3 heartbeats, HM9000's
        heartbeat TTL) and the start window; sender_message_limit the starts per window;
        fetcher_network_timeout_in_seconds the bulk-API timeout; desired_state_batch_size the
        page size."""
        config, _ = self.rendered(fragment("hm9000_defaults", **{
            "dea_next.heartbeat_interval_in_seconds": 5, "hm9000.sender_message_limit": 100,
            "hm9000.fetcher_network_timeout_in_seconds": 12,
            "hm9000.desired_state_batch_size": 250, "hm9000.port": 5156}))
        self.assertEqual(config["intervals"], {"droplet_lost": 15, "queue_batch_size": 100,
                                               "request_queue": 5, "bulk_request_timeout": 12})
        self.assertEqual(config["bulk_api"]["batch_size"], 250)
        self.assertEqual(config["hm9000"]["api_port"], 5156)

    def test_local_route_from_networks_apps_or_the_default_network(self):
        """networks.apps picks the network whose IP /varz binds to; unset, the default
        network's (as HM9000's templates chose); naming no network of the instance fails."""
        networks = {"cf1": {"ip": "10.0.16.5"}, "cf2": {"ip": "10.0.32.5",
                                                        "default": ["dns", "gateway"]}}
        data = fragment("hm9000_defaults")
        data["instance"]["networks"] = networks
        config, _ = self.rendered(data)
        self.assertEqual(config["local_route"], "10.0.32.5")
        config, _ = self.rendered(with_properties(data, {"networks.apps": "cf1"}))
        self.assertEqual(config["local_route"], "10.0.16.5")
        code, _, err = render_job(self, with_properties(data, {"networks.apps": "apps"}))
        self.assertNotEqual(code, 0)
        self.assertIn('networks.apps names "apps"', err)

    def test_two_nats_machines(self):
        """nats.machines of two servers: two URIs in mbus, comma-separated, in order."""
        config, _ = self.rendered(fragment("hm9000_defaults", **{
            "nats.machines": ["10.0.16.11", "10.0.32.11"], "nats.port": 4223}))
        self.assertEqual(config["mbus"], "nats://nats:nats-secret@10.0.16.11:4223,"
                                         "nats://nats:nats-secret@10.0.32.11:4223")

    def test_etcd_machines(self):
        """hm9000.etcd.machines wins over etcd.machines; without require_ssl it is plain
        http and no TLS files are named; etcd.machines with require_ssl is still plain http
        (HM9000's templates did the same), and the flag is warned about."""
        config, _ = self.rendered(fragment("hm9000_defaults", **{
            "hm9000.etcd.machines": ["10.0.16.21", "10.0.32.21"]}))
        self.assertEqual(config["ha"]["etcd"], ["http://10.0.16.21:4001",
                                                "http://10.0.32.21:4001"])
        self.assertFalse({"etcd_ca_file", "etcd_cert_file", "etcd_key_file"} & set(config["ha"]))
        config, files = self.rendered(with_tls(fragment("hm9000_defaults", **{
            "hm9000.etcd.require_ssl": True})))
        self.assertEqual(config["ha"]["etcd"], ["http://127.0.0.1:4001"])
        self.assertEqual(files[WITHOUT_EFFECT].splitlines(), [
            "hm9000.etcd.require_ssl has no effect: hm9000.etcd.machines is unset, and "
            "etcd.machines is reached over plain http"])

    def test_without_etcd_no_ha(self):
        """No etcd at all (not an HM9000 foundation, but possible): one HM, no ha section."""
        data = fragment("hm9000_defaults")
        del data["properties"]["etcd"]
        config, _ = self.rendered(data)
        self.assertNotIn("ha", config)

    def test_properties_without_effect(self):
        """The properties HM9000 read that change nothing here: one line each in
        config/properties_without_effect when the manifest sets them, none otherwise."""
        _, files = self.rendered(realistic(**{"ssl.skip_cert_verify": True,
                                              "metron_agent.dropsonde_incoming_port": 3457}))
        named = [line.split(" has no effect: ")[0]
                 for line in files[WITHOUT_EFFECT].splitlines()]
        self.assertEqual(named, ["hm9000.url", "domain", "cc.external_port",
                                 "metron_agent.dropsonde_incoming_port",
                                 "ssl.skip_cert_verify"])
        _, files = self.rendered(realistic())
        self.assertNotIn("ssl.skip_cert_verify", files[WITHOUT_EFFECT])

    def test_partial_listener_tls_fails_naming_what_is_missing(self):
        """The listener needs its key, certificate and CA: with one missing the render fails
        naming it, rather than a listener that no DEA can reach."""
        data = realistic()
        del data["properties"]["hm9000"]["ca_cert"]
        code, _, err = render_job(self, data)
        self.assertNotEqual(code, 0)
        self.assertIn("hm9000.ca_cert unset", err)
        data = realistic()
        del data["properties"]["hm9000"]["etcd"]["client_key"]
        code, _, err = render_job(self, data)
        self.assertNotEqual(code, 0)
        self.assertIn("hm9000.etcd.client_key unset", err)

    def test_missing_or_bad_properties_fail_naming_them(self):
        """Required properties (HM9000's too) fail the render by name, as do credentials
        that would cut an mbus URI short and a heartbeat interval that is not a number."""
        for dotted in ("cc.bulk_api_password", "cc.internal_api_password", "nats.machines",
                       "cc.srv_api_uri"):
            data = fragment("hm9000_defaults")
            parent, leaf = dotted.split(".")
            del data["properties"][parent][leaf]
            code, _, err = render_job(self, data)
            self.assertNotEqual(code, 0, dotted)
            self.assertIn(dotted, err)
        for dotted, value in (("nats.password", "a,b"), ("nats.user", "a@b"),
                              ("dea_next.heartbeat_interval_in_seconds", "10s")):
            code, _, err = render_job(self, fragment("hm9000_defaults", **{dotted: value}))
            self.assertNotEqual(code, 0, dotted)
            self.assertIn(dotted, err)

    def test_syslog_forwarder_ships_this_jobs_log(self):
        conf = render_job_ok(self, fragment("hm9000_defaults", **{
            "syslog_aggregator.address": "10.0.0.4", "syslog_aggregator.port": 514}))
        conf = conf["config/syslog_forwarder.conf"]
        self.assertIn('File="/var/vcap/sys/log/health_manager_hm9000/health_manager.log"', conf)
        self.assertIn('action(type="omfwd" target="10.0.0.4" port="514" protocol="udp")', conf)

    def test_monit_and_ctl(self):
        """monit watches the rendered pid file through this job's ctl, which is the
        health_manager job's script (each job carries its own copy)."""
        with open(MONIT) as f:
            monit = f.read()
        config, _ = self.rendered(fragment("hm9000_defaults"))
        self.assertEqual(re.search(r"with pidfile (\S+)", monit).group(1), config["pid"])
        for action in ("start", "stop"):
            self.assertIn(f'{action} program "/var/vcap/jobs/health_manager_hm9000/bin/'
                          f'health_manager_ctl {action}" with timeout 30 seconds', monit)
        with open(JOB_CTL, "rb") as ours, open(CTL, "rb") as theirs:
            self.assertEqual(ours.read(), theirs.read())


class CtlTests(TestCase):
    timeout = 60

    async def test_start_warns_about_properties_without_effect(self):
        """`ctl start` logs one warning per property without effect before it starts the
        HM, in health_manager_ctl.log and on stderr (which bosh shows when a start fails)."""
        # Nothing listens on these ports, so the HM, whatever it makes of the config, talks
        # to no other test's NATS or Cloud Controller; no etcd (no HA), no listener TLS.
        data = fragment("hm9000_defaults", **{
            "hm9000.url": "https://hm9000.cf.example.com", "domain": "cf.example.com",
            "cc.external_port": 9022, "nats.port": free_port(), "hm9000.port": free_port(),
            "cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
            "health_manager.status.port": free_port()})
        del data["properties"]["etcd"]
        vcap = install(self, data)
        self.addCleanup(ctl, vcap, "stop")
        _, output = await ctl(vcap, "start")
        with open(os.path.join(vcap.job_dir, WITHOUT_EFFECT)) as f:
            expected = [f"warning: BOSH property {line}" for line in f.read().splitlines()]
        self.assertEqual([line.split(" has no effect")[0] for line in expected],
                         ["warning: BOSH property hm9000.url",
                          "warning: BOSH property domain",
                          "warning: BOSH property cc.external_port"])
        warning = re.compile(r"health_manager_ctl: (warning: .*)")
        self.assertEqual(warning.findall(vcap.log("health_manager_ctl.log")), expected)
        self.assertEqual(warning.findall(output), expected)


def ctl(vcap, action):
    """`bash ctl action` as monit runs it, in the scratch VM: a Deferred of (exit code,
    stdout and stderr)."""
    running = getProcessOutputAndValue("/bin/bash", [vcap.ctl, action], env=vcap.env(),
                                       path=vcap.root)
    return running.addCallback(
        lambda result: (result[2], (result[0] + result[1]).decode("utf-8", "replace")))


class ConsulServicesTests(TestCase):
    """hm9000.service.cf.internal (the CC) and listener-hm9000.service.cf.internal (DEAs of
    v235+) come from cf-release's consul_agent, declared in the instance group's
    consul.agent.services as docs/replacing-hm9000.md shows; their checks are this job's."""

    timeout = 60

    def manifest_job(self):
        """The hm9000_z1 job of the guide's manifest (its YAML block; cf-release manifests
        are BOSH v1 manifests: `jobs` with `templates`)."""
        with open(GUIDE) as f:
            blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
        for block in blocks:
            manifest = yaml.safe_load(block)
            if isinstance(manifest, dict) and "jobs" in manifest:
                return manifest["jobs"][0]
        self.fail(f"no manifest with jobs in {GUIDE}")

    def test_guide_declares_both_services_with_this_jobs_checks(self):
        """The guide's hm9000_z1 keeps consul_agent, metron_agent and route_registrar,
        runs this job instead of hm9000, and declares hm9000 and listener-hm9000 with
        checks that are scripts this job installs."""
        job = self.manifest_job()
        self.assertEqual(job["name"], "hm9000_z1")
        self.assertEqual([template["name"] for template in job["templates"]],
                         ["consul_agent", "health_manager_hm9000", "metron_agent",
                          "route_registrar"])
        services = job["properties"]["consul"]["agent"]["services"]
        # confab (consul_agent) names a service by its key, '_' turned into '-', unless
        # it sets `name`; without `check` it would run /var/vcap/jobs/<key>/bin/... of a
        # job that is not on this VM.
        names = {service.get("name", key.replace("_", "-")): service
                 for key, service in services.items()}
        self.assertEqual(set(names), {"hm9000", "listener-hm9000"})
        with open(JOB_SPEC) as f:
            installed = set(yaml.safe_load(f)["templates"].values())
        with open(GUIDE) as f:
            added = "\n".join(line for block in re.findall(r"```diff\n(.*?)```", f.read(), re.S)
                              for line in block.splitlines() if line.startswith("+"))
        self.assertIn("+  - name: health_manager_hm9000", added)
        for name, script in (("hm9000", "dns_health_check"),
                             ("listener-hm9000", "listener_dns_health_check")):
            path = f"/var/vcap/jobs/health_manager_hm9000/bin/{script}"
            self.assertEqual(names[name]["check"]["script"], path)
            self.assertIn(f"bin/{script}", installed)
            # The diff a reader applies says the same as the resulting job.
            self.assertIn(f"script: {path},", added)

    def test_checks_follow_the_ports_the_hm_listens_on(self):
        """The hm9000 check passes (exit 0) while something listens on hm9000.port and is
        critical (exit 2) once nothing does; the listener check is the same script on the
        rendered heartbeat port."""
        port = free_port()
        data = realistic(**{"hm9000.port": port})
        files = render_job_ok(self, data)
        config = yaml.safe_load(files[CONFIG])
        api_check, listener_check = (files["bin/dns_health_check"],
                                     files["bin/listener_dns_health_check"])
        probe = re.compile(r"/dev/tcp/127\.0\.0\.1/(\d+)\)")
        self.assertEqual(int(probe.search(api_check).group(1)), config["hm9000"]["api_port"])
        self.assertEqual(int(probe.search(listener_check).group(1)),
                         config["hm9000"]["heartbeat_port"])
        self.assertEqual(probe.findall(api_check + listener_check), [str(port),
                                                                     str(HEARTBEAT_PORT)])
        def code(script):
            return [probe.sub("", line) for line in script.splitlines()
                    if not line.startswith("#")]
        self.assertEqual(code(api_check), code(listener_check))
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write(api_check)
        listening = socket.create_server(("127.0.0.1", port))
        try:
            self.assertEqual(subprocess.run(["/bin/bash", script], timeout=10).returncode, 0)
        finally:
            listening.close()
        self.assertEqual(subprocess.run(["/bin/bash", script], timeout=10).returncode, 2)
