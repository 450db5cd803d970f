"""The HTTPS heartbeat listener's start-up checks of its certificate files (each problem
names its `hm9000.ssl` key) and its idea of a heartbeat body; no network."""

import os

from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import ConfigError
from health_manager.contracts.hm9000.heartbeat_listener import is_heartbeat, server_tls_options
from health_manager.testing.tls import tls_files


class TlsFilesTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        files = tls_files(self.directory)
        self.cert = files["server_cert"]
        self.key = files["server_key"]
        self.ca = files["ca_file"]
        self.other_key = files["client_key"]
        self.garbage = self.write("garbage.pem", b"not a PEM file\n")

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def assertNames(self, key, cert_file, key_file, ca_file):  # noqa: N802 (trial style)
        error = self.assertRaises(ConfigError, server_tls_options, cert_file, key_file,
                                  ca_file)
        self.assertEqual(error.key, key)
        return str(error)

    def test_good_files_load(self):
        self.assertIsNotNone(server_tls_options(self.cert, self.key, self.ca))

    def test_each_unusable_file_names_its_key(self):
        missing = os.path.join(self.directory, "missing.pem")
        self.assertIn("cannot read", self.assertNames("hm9000.ssl.cert_file", missing,
                                                      self.key, self.ca))
        self.assertNames("hm9000.ssl.cert_file", self.garbage, self.key, self.ca)
        self.assertNames("hm9000.ssl.key_file", self.cert, missing, self.ca)
        self.assertNames("hm9000.ssl.key_file", self.cert, self.garbage, self.ca)
        self.assertIn("is not the key of", self.assertNames(
            "hm9000.ssl.key_file", self.cert, self.other_key, self.ca))
        self.assertNames("hm9000.ssl.ca_file", self.cert, self.key, missing)
        self.assertNames("hm9000.ssl.ca_file", self.cert, self.key, self.garbage)


class HeartbeatBodyTests(SynchronousTestCase):
    def test_an_object_with_a_droplets_array(self):
        """Only the shape is checked: the entries are judged by the NATS ingest."""
        self.assertTrue(is_heartbeat(b'{"dea": "d", "droplets": []}'))
        self.assertTrue(is_heartbeat(b'{"droplets": [{"odd": 1}, 5], "prod": false}'))
        for body in (b"", b"nope", b"[]", b"{}", b'{"droplets": {}}', b'{"droplets": [1,'):
            self.assertFalse(is_heartbeat(body), body)
