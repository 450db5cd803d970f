"""The version is one number: setup.cfg's, health_manager.__version__, the changelog's."""

import configparser
import os
import re

from twisted.trial.unittest import SynchronousTestCase

import health_manager
from health_manager.tap import version_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class VersionTests(SynchronousTestCase):
    def setup_cfg_version(self):
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        return parser["metadata"]["version"]

    def test_package_version_is_setup_cfg_version(self):
        """health_manager.__version__ (the fallback of --version in a source tree) is
        setup.cfg's version."""
        self.assertEqual(health_manager.__version__, self.setup_cfg_version())

    def test_changelog_has_a_section_for_the_version(self):
        """CHANGELOG.md's newest section is the version in setup.cfg."""
        with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
            sections = re.findall(r"^## \[([^\]]+)\]", f.read(), re.MULTILINE)
        self.assertEqual(sections[0], self.setup_cfg_version())

    def test_version_line_names_the_version(self):
        """`health_manager --version` starts with the version."""
        self.assertTrue(version_line().startswith(f"health_manager {self.setup_cfg_version()} "))
