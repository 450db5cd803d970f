"""Log output: the configured level, text or JSON lines, stdout or `logging.file`, and
the local syslog under the `logging.syslog` program name (as HM 2.0's steno did)."""

import logging
import sys
import syslog
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.syslog import SyslogObserver
from zope.interface import implementer

# Steno level names (HM 2.0's logger) mapped onto twisted.logger levels.
_STENO_TO_TWISTED = {
    "fatal": LogLevel.critical,
    "error": LogLevel.error,
    "warn": LogLevel.warn,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
    "debug1": LogLevel.debug,
    "debug2": LogLevel.debug,
    "all": LogLevel.debug,
}


@implementer(ILogObserver)
class _Silence:
    """The `off` level: observes nothing."""

    def __call__(self, event):
        pass


def twisted_level(steno_level):
    return _STENO_TO_TWISTED.get(steno_level)


def make_observer(logging_config, stdout=None, also=(), syslog_observer=SyslogObserver):
    """An ILogObserver honouring `logging.level`, `logging.file`, `logging.json` and
    `logging.syslog`.

    `also` are observers that see every event whatever the level (e.g. per-level counts).
    """
    level = twisted_level(logging_config.level)
    if logging_config.file:
        out: IO[str] = open(logging_config.file, "a", encoding="utf-8")
    else:
        out = stdout or sys.stdout
    sink: ILogObserver
    if level is None:
        sink = _Silence()
    else:
        sinks: list[ILogObserver] = [
            jsonFileLogObserver(out) if logging_config.json else textFileLogObserver(out)]
        if logging_config.syslog:
            # Twisted's syslog observer, under the configured program name (the `ident`).
            sinks.append(_SyslogSink(syslog_observer(logging_config.syslog)))
        predicate = LogLevelFilterPredicate(defaultLogLevel=level)
        # Twisted's ClientService (the Redis connection of HA) logs every reconnect attempt;
        # the HA lease logs the outage once instead.
        predicate.setLogLevelForNamespace("twisted.application._client_service",
                                          max(level, LogLevel.warn, key=_LEVELS_ORDER.index))
        sink = FilteringLogObserver(sinks[0] if len(sinks) == 1 else _Fanout(sinks),
                                    [predicate])
    if not also:
        return sink
    return _Fanout([sink, *also])


_LEVELS_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error,
                 LogLevel.critical]


@implementer(ILogObserver)
class _SyslogSink:
    """Events to Twisted's SyslogObserver, each with the syslog priority of its level."""

    _PRIORITIES = {LogLevel.critical: syslog.LOG_CRIT, LogLevel.error: syslog.LOG_ERR,
                   LogLevel.warn: syslog.LOG_WARNING, LogLevel.info: syslog.LOG_INFO,
                   LogLevel.debug: syslog.LOG_DEBUG}

    def __init__(self, observer):
        self._legacy = LegacyLogObserverWrapper(observer.emit)

    def __call__(self, event):
        priority = self._PRIORITIES.get(event.get("log_level"), syslog.LOG_INFO)
        self._legacy(dict(event, syslogPriority=priority))


@implementer(ILogObserver)
class _Fanout:
    def __init__(self, observers):
        self._observers = observers

    def __call__(self, event):
        for observer in self._observers:
            observer(event)


class StdlibLogBridge(logging.Handler):
    """Routes stdlib `logging` records (nats-py reports read-loop errors there) into
    twisted.logger, so they reach the configured output instead of bare stderr."""

    _LEVELS = ((logging.CRITICAL, LogLevel.critical), (logging.ERROR, LogLevel.error),
               (logging.WARNING, LogLevel.warn), (logging.INFO, LogLevel.info))

    def __init__(self, logger=None):
        super().__init__()
        self._log = logger or Logger(namespace="stdlib")

    def emit(self, record):
        level = next((twisted for stdlib, twisted in self._LEVELS if record.levelno >= stdlib),
                     LogLevel.debug)
        self._log.emit(level, "{logger_name}: {message}", logger_name=record.name,
                       message=record.getMessage())


def bridge_stdlib_logging(root=None):
    """Install the bridge on the root stdlib logger (once per process, at start-up)."""
    root = root or logging.getLogger()
    root.addHandler(StdlibLogBridge())
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
