"""twistd plugin options: config file resolution and start-up failures naming the key."""

import io
import os
import sys

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.logger import ILogObserver
from twisted.python.components import Componentized
from twisted.trial.unittest import SynchronousTestCase

from health_manager.tap import HealthManagerService, Options, default_config_path


class ConfigPathTests(SynchronousTestCase):
    def test_cloud_foundry_config_path(self):
        """Without --config, $CLOUD_FOUNDRY_CONFIG_PATH/health_manager.yml is read."""
        self.assertEqual(default_config_path({"CLOUD_FOUNDRY_CONFIG_PATH": "/var/vcap/jobs"}),
                         "/var/vcap/jobs/health_manager.yml")

    def test_repo_config_when_unset(self):
        """Without that variable, config/health_manager.yml is read."""
        self.assertEqual(default_config_path({}), os.path.join("config", "health_manager.yml"))


class InvalidConfigTests(SynchronousTestCase):
    def parse(self, args, text=None):
        if text is not None:
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(text)
            args = args + [path]
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        error = self.assertRaises(SystemExit, Options(environ={}).parseOptions, args)
        return error.code, stderr.getvalue()

    def test_wrong_type_exits_with_one_line_naming_the_key(self):
        """intervals.droplet_lost: "abc" exits non-zero with one line naming the key."""
        code, err = self.parse(["-c"], "mbus: nats://h:4222\nbulk_api: {host: h}\n"
                                       "intervals: {droplet_lost: abc}\n")
        self.assertNotEqual(code, 0)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("'intervals.droplet_lost'", err)

    def test_unreadable_file(self):
        """A config file that cannot be read exits non-zero naming it."""
        code, err = self.parse(["--config", "/nonexistent.yml"])
        self.assertNotEqual(code, 0)
        self.assertIn("/nonexistent.yml", err)


class LogObserverTests(SynchronousTestCase):
    def test_observer_registered_on_application(self):
        """The configured log observer becomes the application's ILogObserver for twistd."""
        def observer(event):
            pass

        top = HealthManagerService(Service(), observer, [])
        application = Componentized()
        application.setComponent(IServiceCollection, MultiService())
        top.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
