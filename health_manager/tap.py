"""`twistd health_manager`: command-line options, reactor choice and the top service."""

import os
import sys

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from health_manager.config import ConfigError, load_config


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


_TWISTD_DEFAULT_PIDFILE = "twistd.pid"


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
        # The `pid` key applies unless --pidfile was given: twistd's default is
        # "twistd.pid" (made absolute only after this runs), so that value means "not given".
        if parent is not None and self.config.pid \
                and parent.get("pidfile") in (None, _TWISTD_DEFAULT_PIDFILE):
            parent["pidfile"] = self.config.pid


class HealthManagerService(MultiService):
    """The top service: the Manager, plus the log observer twistd picks up."""

    log = Logger()

    def __init__(self, manager, observer, warnings):
        super().__init__()
        self._observer = observer
        self._warnings = warnings
        manager.setServiceParent(self)

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
    manager = Manager(options.config, options.reactor)
    observer = make_observer(options.config.logging, also=[manager.log_counts])
    return HealthManagerService(manager, observer, options.warnings)
