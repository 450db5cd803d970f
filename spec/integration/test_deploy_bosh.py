"""The BOSH job: its templates rendered with Ruby's ERB as the director renders them, and
the health manager started by the job's ctl script on each rendered config, against a real
nats-server, up on /healthz, warning only about keys HM 2.0 ignored too, stopped by SIGTERM
within monit's timeout."""

import os
import re
import signal
import time
from urllib.parse import urlsplit

import orjson
import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from health_manager.bus import NatsBus, RequestTimeout
from health_manager.config import build_config
from health_manager.simulation.nats_server import NatsCluster, NatsServer, free_port
from spec.integration.bosh_support import (
    CONFIG_TEMPLATE,
    FORWARDER_TEMPLATE,
    JOB_SPEC,
    MONIT,
    RedisServer,
    ScratchVcap,
    alive,
    fragment,
    render,
    render_ok,
    varz_when,
    wait_healthz,
    with_properties,
)
from spec.integration.support import wait_until

# cf-release's health_manager_next spec defaults (the list), as rendered.
NEXT_INTERVALS = {
    "expected_state_update": 60, "droplet_lost": 30, "droplets_analysis": 20,
    "flapping_death": 1, "flapping_timeout": 1920, "restart_timeout": 20,
    "min_restart_delay": 60, "max_restart_delay": 960, "giveup_crash_number": -1,
    "stable_state": 60,
}
NO_EFFECT = [f"config key 'intervals.{key}' has no effect (HM 2.0 did not use it either)"
             for key in ("expected_state_update", "restart_timeout", "stable_state")]
MONIT_TIMEOUT = 30  # seconds, the stop program's "with timeout" in the job's monit file


class RenderingTests(TestCase):
    timeout = 60

    def rendered(self, data):
        return yaml.safe_load(render_ok(self, CONFIG_TEMPLATE, data))

    def test_spec_defaults(self):
        """With only the required properties, the config carries health_manager_next's
        defaults, mbus from nats.*, local_route from networks.apps, and no status or ha."""
        config = self.rendered(fragment("defaults"))
        self.assertEqual(config["mbus"], "nats://nats:nats-secret@127.0.0.1:4222")
        self.assertEqual(config["local_route"], "127.0.0.1")
        self.assertEqual(config["index"], 0)
        self.assertEqual(config["pid"], "/var/vcap/sys/run/health_manager/health_manager.pid")
        self.assertEqual(config["logging"], {
            "level": "info", "file": "/var/vcap/sys/log/health_manager/health_manager.log"})
        self.assertEqual(config["bulk_api"], {"host": "http://127.0.0.1:9022",
                                              "batch_size": 500})
        self.assertEqual(config["cc_partition"], "default")
        self.assertEqual(config["intervals"], NEXT_INTERVALS)
        self.assertNotIn("status", config)
        self.assertNotIn("ha", config)
        _, warnings = build_config(config, environ={})
        self.assertEqual(sorted(warnings), NO_EFFECT)

    def test_realistic_manifest(self):
        """A cf-release manifest's properties: every NATS machine, the job index,
        overridden intervals and status."""
        config = self.rendered(fragment("realistic"))
        self.assertEqual(config["mbus"], ",".join(
            f"nats://nats:c1oudc0w:with'odd@chars@127.0.0.{n}:4222" for n in (1, 2, 3)))
        self.assertEqual(config["index"], 1)
        # The forwarder ships the log file; HM-side syslog would send each line twice.
        self.assertNotIn("syslog", config["logging"])
        self.assertEqual(config["intervals"], dict(
            NEXT_INTERVALS, droplets_analysis=10, flapping_timeout=600, giveup_crash_number=6))
        self.assertEqual(config["status"], {"port": 54322, "user": "hm",
                                            "password": "hm-status-secret"})
        built, warnings = build_config(config, environ={})
        self.assertEqual(sorted(warnings), NO_EFFECT)
        self.assertEqual(built.intervals.giveup_crash_number, 6)

    def test_nats_machines_make_a_cluster_mbus(self):
        """nats.machines renders every machine into mbus, comma-separated, which the HM
        reads as the cluster's servers; without it (or with none) nats.address is the one
        server; without either the render fails naming both."""
        config = self.rendered(fragment("cluster"))
        self.assertEqual(config["mbus"], "nats://nats:nats-cluster-secret@127.0.0.1:4222,"
                                         "nats://nats:nats-cluster-secret@127.0.0.2:4222")
        built, _ = build_config(config, environ={})
        self.assertEqual(built.mbus, tuple(config["mbus"].split(",")))
        only_address = self.rendered(fragment("cluster", **{
            "nats.machines": [], "nats.address": "10.0.0.9"}))
        self.assertEqual(only_address["mbus"], "nats://nats:nats-cluster-secret@10.0.0.9:4222")
        data = fragment("cluster")
        del data["properties"]["nats"]["machines"]
        code, _, err = render(self, CONFIG_TEMPLATE, data)
        self.assertNotEqual(code, 0)
        self.assertIn("nats.machines (or nats.address)", err)

    def test_syslog_forwarder(self):
        """The rsyslog forwarder ships the HM's log to syslog_aggregator over its transport,
        and is empty without an aggregator (the ctl then installs nothing)."""
        conf = render_ok(self, FORWARDER_TEMPLATE, fragment("realistic"))
        self.assertIn('File="/var/vcap/sys/log/health_manager/health_manager.log"', conf)
        self.assertIn('action(type="omfwd" target="127.0.0.4" port="54321" protocol="tcp")',
                      conf)
        self.assertIn("if $programname == 'vcap.health_manager' then", conf)
        everything = render_ok(self, FORWARDER_TEMPLATE, fragment(
            "realistic", **{"syslog_aggregator.all": True,
                            "syslog_aggregator.transport": "relp"}))
        self.assertIn('*.* action(type="omrelp" target="127.0.0.4" port="54321")',
                      everything)
        self.assertEqual(render_ok(self, FORWARDER_TEMPLATE, fragment("defaults")), "")

    def test_ha_fragment(self):
        """health_manager.ha.* renders the ha section with the five keys."""
        config = self.rendered(fragment("ha"))
        self.assertEqual(config["ha"], {
            "redis": "redis://:redis-secret@127.0.0.1:6379/2", "lease_duration": 15,
            "renew_deadline": 10, "retry_period": 2, "key_prefix": "cf-prod-hm"})
        defaults = self.rendered(fragment("ha", **{"health_manager.ha": {
            "redis": "redis://127.0.0.1:6379/0"}}))
        self.assertEqual(defaults["ha"], {
            "redis": "redis://127.0.0.1:6379/0", "lease_duration": 15,
            "renew_deadline": 10, "retry_period": 2, "key_prefix": "health_manager"})

    def test_ha_sentinels(self):
        """health_manager.ha.sentinels and .master_name render beside (or instead of)
        ha.redis, which then gives only the password."""
        config = self.rendered(fragment("ha", **{"health_manager.ha": {
            "redis": "redis://:redis-secret@127.0.0.1:6379/0", "master_name": "hm-master",
            "sentinels": ["10.0.0.11:26379", "10.0.0.12:26379"]}}))
        self.assertEqual(
            {key: config["ha"][key] for key in ("redis", "sentinels", "master_name")},
            {"redis": "redis://:redis-secret@127.0.0.1:6379/0", "master_name": "hm-master",
             "sentinels": ["10.0.0.11:26379", "10.0.0.12:26379"]})
        built, warnings = build_config(config, {})
        self.assertEqual((built.ha.sentinels, built.ha.master_name, built.ha.redis_password),
                         ((("10.0.0.11", 26379), ("10.0.0.12", 26379)), "hm-master",
                          "redis-secret"))
        self.assertTrue(any("ha.redis" in w and "not used" in w for w in warnings), warnings)

    def test_missing_required_property_fails_naming_it(self):
        """Without cc.srv_api_uri the render fails, naming the property."""
        data = fragment("defaults")
        del data["properties"]["cc"]
        code, _, err = render(self, CONFIG_TEMPLATE, data)
        self.assertNotEqual(code, 0)
        self.assertIn("cc.srv_api_uri", err)

    def test_password_that_would_cut_the_uri_fails(self):
        """A NATS password holding '#' fails the render, naming nats.password."""
        code, _, err = render(self, CONFIG_TEMPLATE,
                              fragment("defaults", **{"nats.password": "a#b"}))
        self.assertNotEqual(code, 0)
        self.assertIn("nats.password", err)

    def test_monit_watches_the_rendered_pid_file(self):
        """monit's pidfile is the rendered `pid` key, and it runs the job's ctl script."""
        with open(MONIT) as f:
            monit = f.read()
        pid = self.rendered(fragment("defaults"))["pid"]
        self.assertEqual(re.search(r"with pidfile (\S+)", monit).group(1), pid)
        with open(JOB_SPEC) as f:
            spec = yaml.safe_load(f)
        self.assertEqual(spec["templates"]["health_manager_ctl"], "bin/health_manager_ctl")
        for action in ("start", "stop"):
            self.assertIn(f'{action} program "/var/vcap/jobs/health_manager/bin/'
                          f'health_manager_ctl {action}" with timeout {MONIT_TIMEOUT} seconds',
                          monit)


class StartOnRenderedConfigTests(TestCase):
    """Each rendered config, started by the ctl script as monit would."""

    timeout = 90

    def setUp(self):
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)

    def start_nats(self, data):
        nats = data["properties"]["nats"]
        server = NatsServer(user=nats["user"], password=nats["password"]).start()
        self.addCleanup(server.stop)
        return server

    async def ctl(self, vcap, action):
        out, err, code = await getProcessOutputAndValue(
            "/bin/bash", [vcap.ctl, action], env=vcap.env(), path=vcap.root)
        return code, (out + err).decode("utf-8", "replace")

    async def start_hm(self, data):
        """Render `data`, lay out the VM, run `ctl start`; the ScratchVcap and the HM's pid."""
        vcap = ScratchVcap(self, render_ok(self, CONFIG_TEMPLATE, data))
        code, output = await self.ctl(vcap, "start")
        self.assertEqual(code, 0, output + vcap.log("health_manager.stderr.log"))
        with open(vcap.config["pid"]) as f:
            pid = int(f.read())
        self.addCleanup(_kill, pid)
        return vcap, pid

    async def get(self, port, path, user, password):
        response = await self.http.get(f"http://127.0.0.1:{port}{path}", auth=(user, password))
        return response.code, await treq.content(response)

    def wait_healthz(self, port, user, password):
        return wait_healthz(self, lambda path: self.get(port, path, user, password))

    def varz_when(self, port, predicate, timeout=10):
        """The first /varz (as user hm) for which `predicate` holds."""
        return varz_when(self, lambda path: self.get(port, path, "hm", "hm-status-secret"),
                         predicate, timeout)

    def assertOnlyNoEffectWarnings(self, vcap):
        warnings = re.findall(r"#warn\] (.*)", vcap.log())
        self.assertEqual(sorted(warnings), NO_EFFECT, vcap.log())

    async def stop_hm(self, vcap, pid):
        """`ctl stop`: SIGTERM, and the HM is gone well within monit's timeout."""
        started = time.monotonic()
        code, output = await self.ctl(vcap, "stop")
        elapsed = time.monotonic() - started
        self.assertEqual(code, 0, output)
        self.assertLess(elapsed, MONIT_TIMEOUT)
        self.assertNotIn("SIGKILL", output)
        self.assertFalse(alive(pid))
        self.assertIn("health manager stopped", vcap.log())

    async def test_spec_defaults_start(self):
        """The defaults render starts; its ephemeral status port and random credentials are
        found through vcap.component.discover, as operators of HM 2.0 found them."""
        data = fragment("defaults", **{"cc.srv_api_uri": f"http://127.0.0.1:{free_port()}"})
        nats = self.start_nats(data)
        data = with_properties(data, {"nats.port": nats.port})
        vcap, pid = await self.start_hm(data)
        bus = NatsBus(reactor, nats.url, name="operator")
        self.addCleanup(bus.stop)
        bus.start()
        await wait_until(lambda: bus.connected, what="operator connected")
        found, deadline = [], time.monotonic() + 15
        while not found:
            self.assertLess(time.monotonic(), deadline, "no discover reply in 15 s")
            try:
                found = await bus.request("vcap.component.discover", b"", timeout=0.5)
            except RequestTimeout:
                self.assertTrue(alive(pid), vcap.log("health_manager.stderr.log"))
        component = orjson.loads(found[0].data)
        host, port = component["host"].split(":")
        self.assertEqual(host, "127.0.0.1")
        user, password = component["credentials"]
        await self.wait_healthz(int(port), user, password)
        self.assertOnlyNoEffectWarnings(vcap)
        await self.stop_hm(vcap, pid)

    async def test_realistic_start(self):
        """The realistic render (odd NATS password, syslog, status block) starts, serves
        /healthz and /varz with its index, and stops on SIGTERM well within monit's timeout;
        the pid file is where monit looks, and goes away."""
        status_port = free_port()
        data = fragment("realistic", **{"cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
                                        "health_manager.status.port": status_port})
        nats = self.start_nats(data)
        data = with_properties(data, {"nats.port": nats.port})
        vcap, pid = await self.start_hm(data)
        await self.wait_healthz(status_port, "hm", "hm-status-secret")
        # The odd password got it onto NATS, and /varz shows none of it.
        varz = await self.varz_when(status_port, lambda v: v["nats_connected"])
        self.assertEqual(varz["index"], 1)
        self.assertNotIn("mbus", varz["config"])
        self.assertNotIn("with'odd@chars", orjson.dumps(varz).decode())
        self.assertOnlyNoEffectWarnings(vcap)
        await self.stop_hm(vcap, pid)

    async def test_nats_cluster_start_and_failover(self):
        """The cluster render against two clustered nats-servers on the machines' addresses
        and nats.port: the HM is on one (/varz nats_server says which), and when that one
        is killed /varz names the other within seconds."""
        port, status_port = free_port(), free_port()
        data = fragment("cluster", **{"cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
                                      "health_manager.status.port": status_port,
                                      "nats.port": port})
        nats = data["properties"]["nats"]
        cluster = NatsCluster(user=nats["user"], password=nats["password"],
                              hosts=nats["machines"], port=port)
        self.addCleanup(cluster.stop)
        cluster.start()
        vcap, pid = await self.start_hm(data)
        await self.wait_healthz(status_port, "hm", "hm-status-secret")
        first = (await self.varz_when(status_port, lambda v: v["nats_server"]))["nats_server"]
        self.assertIn(first, [f"nats://nats:***@{host}:{port}" for host in nats["machines"]])
        self.assertOnlyNoEffectWarnings(vcap)
        killed_at = time.monotonic()
        cluster.member_on(port, urlsplit(first).hostname).kill()
        second = (await self.varz_when(
            status_port, lambda v: v["nats_server"] not in (None, first)))["nats_server"]
        failover = time.monotonic() - killed_at
        self.assertLess(failover, 5)
        self.assertIn(f"NATS connected to {second} after", vcap.log())
        self.assertNotIn(nats["password"], vcap.log())
        await self.stop_hm(vcap, pid)
        print(f"\n/varz named the other NATS machine {failover:.2f} s after the kill")

    async def test_ha_start(self):
        """The HA render starts against a real Redis and serves /healthz; its only warnings
        are the no-effect ones. Needs the `ha` config section (the HA work) in config.py."""
        redis = RedisServer("redis-secret").start(self)
        status_port = free_port()
        data = fragment("ha", **{"cc.srv_api_uri": f"http://127.0.0.1:{free_port()}",
                                 "health_manager.status.port": status_port,
                                 "health_manager.ha.redis": redis.url})
        nats = self.start_nats(data)
        data = with_properties(data, {"nats.port": nats.port})
        vcap, pid = await self.start_hm(data)
        await self.wait_healthz(status_port, "hm", "hm-status-secret")
        self.assertOnlyNoEffectWarnings(vcap)
        # Alone on the Redis named by the rendered URI (password included), it leads.
        varz = await self.varz_when(status_port, lambda v: v.get("ha_role") == "leader")
        self.assertEqual(varz["ha_epoch"], 1)
        await self.stop_hm(vcap, pid)

    async def test_bad_config_fails_the_start_naming_the_key(self):
        """`ctl start` on a config with a wrong-typed interval exits non-zero, printing the
        HM's line that names the key; no pid file is left for monit."""
        data = fragment("defaults", **{"health_manager.intervals.droplet_lost": "thirty"})
        vcap = ScratchVcap(self, render_ok(self, CONFIG_TEMPLATE, data))
        code, output = await self.ctl(vcap, "start")
        self.assertNotEqual(code, 0)
        self.assertIn("'intervals.droplet_lost'", output)
        self.assertIn("'intervals.droplet_lost'", vcap.log("health_manager_ctl.log"))
        self.assertFalse(os.path.exists(vcap.config["pid"]))


def _kill(pid):
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
