"""A real headless browser for the page tests: Debian's chromium, installed with apt-get
when missing (as root, or through passwordless sudo); otherwise the tests are skipped with
the reason printed.

Only loopback pages are loaded, with every background connection of the browser switched
off (no updates, no sync, no QUIC) and a fresh profile directory per run.
"""

import os
import shutil
import subprocess
import sys
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
INSTALL_TIMEOUT = 600


def find_browser():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _apt(*args):
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        raise RuntimeError("not root and no sudo to run apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run([*prefix, "apt-get", *args], env=env, capture_output=True,
                          text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"apt-get {args[0]} failed: {tail[0]}")


def ensure_browser():
    """(path, None) of a usable browser, installing Debian's chromium if needed; else
    (None, the reason it could not be had)."""
    path = find_browser()
    if path is not None:
        return path, None
    if shutil.which("apt-get") is None:
        return None, "no chromium and no apt-get to install it"
    try:
        sys.stderr.write("installing chromium with apt-get for the status page test...\n")
        _apt("update", "-q")
        _apt("install", "-y", "-q", "--no-install-recommends", "chromium")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return None, f"chromium could not be installed: {e}"
    path = find_browser()
    return (path, None) if path else (None, "apt-get installed chromium but it is not on PATH")


def browser_argv(browser, profile, *args):
    return [browser, *FLAGS, f"--user-data-dir={profile}", *args]


def new_profile():
    return tempfile.mkdtemp(prefix="hm-chromium-")
