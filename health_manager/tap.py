"""`twistd health_manager`: command-line options, reactor choice and the top service."""

import os
import sys
from importlib import metadata

import twisted
from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

import health_manager
from health_manager.config import ConfigError, load_config
from health_manager.web.status_server import StatusPortError

# twistd's own default pid file: when it is still in place, `pid` from the config decides.
TWISTD_DEFAULT_PIDFILE = "twistd.pid"


def version_line():
    try:
        version = metadata.version("health_manager")
    except metadata.PackageNotFoundError:  # run from a source tree
        version = health_manager.__version__
    return (f"health_manager {version} (Twisted {twisted.__version__}, "
            f"Python {sys.version.split()[0]})")


def default_config_path(environ):
    base = environ.get("CLOUD_FOUNDRY_CONFIG_PATH")
    if base:
        return os.path.join(base, "health_manager.yml")
    return os.path.join("config", "health_manager.yml")


def install_asyncio_reactor():
    """nats-py needs asyncio: install Twisted's asyncio reactor unless one is installed.

    Done here, in postOptions, never at plugin import: twistd imports every plugin.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor

    if type(reactor).__name__ != "AsyncioSelectorReactor":
        raise usage.UsageError(
            f"health_manager needs the asyncio reactor, not {type(reactor).__name__}")
    return reactor


class Options(usage.Options):
    synopsis = "[-c FILE]"
    optParameters = [
        ["config", "c", None,
         "Configuration file (default: $CLOUD_FOUNDRY_CONFIG_PATH/health_manager.yml, "
         "else config/health_manager.yml)."],
    ]

    def __init__(self, environ=None):
        super().__init__()
        self.environ = os.environ if environ is None else environ

    def opt_version(self):
        """Print health_manager's version (and Twisted's) and exit."""
        sys.stdout.write(version_line() + "\n")
        sys.exit(0)

    def postOptions(self):
        path = self["config"] or default_config_path(self.environ)
        try:
            self.config, self.warnings = load_config(path, self.environ)
        except ConfigError as e:
            # One line naming the key, then a non-zero exit: not twistd's usage dump.
            sys.stderr.write(f"health_manager: {e}\n")
            raise SystemExit(1) from None
        self.reactor = install_asyncio_reactor()
        parent = getattr(self, "parent", None)
        if parent is not None and parent.get("pidfile") == TWISTD_DEFAULT_PIDFILE:
            # No --pidfile given: the config's `pid` as HM 2.0 did, else none at all (no
            # stray ./twistd.pid to block the next start in this directory).
            parent["pidfile"] = self.config.pid or ""
        self.pidfile = parent.get("pidfile") if parent is not None else None


class HealthManagerService(MultiService):
    """The top service: the Manager, plus the log observer twistd picks up."""

    log = Logger()

    def __init__(self, manager, observer, warnings, pidfile=None, stderr=None):
        super().__init__()
        self._observer = observer
        self._warnings = warnings
        self._pidfile = pidfile
        self._stderr = stderr
        manager.setServiceParent(self)

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except StatusPortError as e:
            # One line and a non-zero exit, not twistd's traceback; twistd removes its pid
            # file only for an Exception, so it is removed here.
            # twistd has redirected sys.stderr into the log by now: the real one is wanted.
            stderr = self._stderr or sys.__stderr__
            if stderr is not None:  # None only in a process started without a stderr
                stderr.write(f"health_manager: {e}\n")
            if self._pidfile:
                try:
                    os.remove(os.path.abspath(self._pidfile))
                except OSError:
                    pass
            raise SystemExit(1) from None

    def setServiceParent(self, parent):
        # twistd's AppLogger uses the application's ILogObserver component when no
        # --logger is given: that is how `logging.*` settings reach twistd's logging.
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self._observer)
        return super().setServiceParent(parent)

    def startService(self):
        for warning in self._warnings:
            self.log.warn("{warning}", warning=warning)
        super().startService()


def makeService(options):
    from health_manager.log import bridge_stdlib_logging, make_observer
    from health_manager.manager import Manager

    bridge_stdlib_logging()
    try:
        manager = Manager(options.config, options.reactor)
    except ConfigError as e:
        # A value only the component using it can judge (a TLS file's content): one line
        # naming the key and exit 1, as for the config file's own errors.
        sys.stderr.write(f"health_manager: {e}\n")
        raise SystemExit(1) from None
    observer = make_observer(options.config.logging, also=[manager.log_counts])
    return HealthManagerService(manager, observer, options.warnings,
                                pidfile=getattr(options, "pidfile", None))
