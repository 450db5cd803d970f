"""Log output honours logging.level and logging.json; stdlib logging reaches twisted.logger."""

import io
import json
import logging
import syslog

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import LoggingConfig
from twisted.python.syslog import SyslogObserver

from health_manager.log import StdlibLogBridge, make_observer


class ObserverTests(SynchronousTestCase):
    def emit(self, config, level, text):
        out = io.StringIO()
        observer = make_observer(config, stdout=out)
        Logger(observer=observer).emit(level, "{text}", text=text)
        return out.getvalue()

    def test_level_filters(self):
        """Below logging.level nothing is written; at or above it the line appears."""
        config = LoggingConfig(level="warn")
        self.assertEqual(self.emit(config, LogLevel.info, "quiet"), "")
        self.assertIn("loud", self.emit(config, LogLevel.error, "loud"))

    def test_syslog(self):
        """logging.syslog opens the syslog under that program name and sends it the
        events at or above the level, besides the normal output."""
        opened, sent = [], []

        class FakeSyslog(SyslogObserver):
            openlog = staticmethod(lambda ident, options, facility: opened.append(ident))
            syslog = staticmethod(lambda priority, text: sent.append((priority, text)))

        out = io.StringIO()
        config = LoggingConfig(level="info", syslog="vcap.health_manager")
        observer = make_observer(config, stdout=out, syslog_observer=FakeSyslog)
        log = Logger(observer=observer)
        log.debug("hidden")
        log.warn("disk {what}", what="full")
        self.assertEqual(opened, ["vcap.health_manager"])
        [(priority, text)] = sent
        self.assertEqual(priority, syslog.LOG_WARNING)
        self.assertTrue(text.endswith("disk full"), text)
        self.assertIn("disk full", out.getvalue())

    def test_off_writes_nothing(self):
        """logging.level: off silences every line."""
        self.assertEqual(self.emit(LoggingConfig(level="off"), LogLevel.critical, "x"), "")

    def test_json_lines(self):
        """logging.json writes one JSON object per line with the structured fields."""
        line = self.emit(LoggingConfig(level="info", json=True), LogLevel.info, "hello")
        event = json.loads(line.strip("\x1e\n"))
        self.assertEqual(event["text"], "hello")

    def test_also_observers_see_everything(self):
        """Extra observers (per-level counts) see events the level filter drops."""
        seen = []
        observer = make_observer(LoggingConfig(level="error"), stdout=io.StringIO(),
                                 also=[seen.append])
        Logger(observer=observer).info("dropped from output")
        self.assertEqual(len(seen), 1)


class BridgeTests(SynchronousTestCase):
    def test_stdlib_warning_becomes_a_twisted_event(self):
        """A stdlib logging warning (as nats-py emits) becomes a twisted warn event."""
        events = []
        logger = logging.getLogger("nats.test-bridge")
        handler = StdlibLogBridge(Logger(observer=events.append))
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        logger.warning("read loop %s", "failed")
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(events[0]["message"], "read loop failed")
