"""Config for the HM9000 contract (issue 19): cc_protocol, bulk credentials from the
config, the `hm9000` section, and HM9000's crash schedule as interval defaults."""

import os

import attrs
import yaml
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import (
    HM2,
    HM9000,
    ConfigError,
    Hm9000Ssl,
    Intervals,
    build_config,
    redacted,
)
from health_manager.contracts.hm9000.policy import INTERVAL_DEFAULTS

MBUS = "nats://nats:secret@127.0.0.1:4222/"
BULK = {"host": "http://cc:9022", "user": "bulk_api", "password": "bulk-secret"}
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "config", "health_manager.yml")
HM9000_SECTION = {"api_user": "internal_user", "api_password": "api-secret"}


def build(**raw):
    raw.setdefault("mbus", MBUS)
    raw.setdefault("bulk_api", {"host": "http://cc:9022"})
    return build_config(raw, {}, token_hex=lambda n: "r" * (2 * n))


def build_hm9000(hm9000=None, **raw):
    raw.setdefault("bulk_api", dict(BULK))
    return build(cc_protocol="hm9000",
                 hm9000=dict(HM9000_SECTION) if hm9000 is None else hm9000, **raw)


class ProtocolTests(SynchronousTestCase):
    def test_default_is_hm2_without_hm9000_section(self):
        """Without cc_protocol: today's behaviour, no hm9000 settings, NATS credentials."""
        config, warnings = build()
        self.assertEqual(config.cc_protocol, HM2)
        self.assertIsNone(config.hm9000)
        self.assertIsNone(config.bulk_api.user)
        self.assertIsNone(config.bulk_api.password)
        self.assertEqual(warnings, [])

    def test_unknown_protocol_fails_naming_the_key(self):
        """cc_protocol takes hm2 or hm9000 only."""
        for value in ("hm9k", "HM9000", 9000, True):
            e = self.assertRaises(ConfigError, build, cc_protocol=value)
            self.assertEqual(e.key, "cc_protocol")

    def test_hm9000_section_defaults(self):
        """With only the required keys, the section takes HM9000's defaults."""
        config, warnings = build_hm9000()
        self.assertEqual(config.cc_protocol, HM9000)
        hm9000 = config.hm9000
        self.assertEqual(
            (hm9000.api_port, hm9000.api_address, hm9000.api_user, hm9000.api_password,
             hm9000.heartbeat_port, hm9000.heartbeat_address, hm9000.ssl,
             hm9000.start_subject, hm9000.stop_subject),
            (5155, "0.0.0.0", "internal_user", "api-secret", None, "0.0.0.0", None,
             "hm9000.start", "hm9000.stop"))
        self.assertEqual(warnings, [])

    def test_hm9000_section_with_listener(self):
        """Every key of the section is read, ssl files included."""
        files = make_files(self)
        config, warnings = build_hm9000({
            **HM9000_SECTION, "api_port": 0, "api_address": "127.0.0.1",
            "heartbeat_port": 5335, "heartbeat_address": "10.0.0.1", "ssl": files,
            "start_subject": "hm9000.start.x", "stop_subject": "hm9000.stop.x"})
        hm9000 = config.hm9000
        self.assertEqual((hm9000.api_port, hm9000.api_address, hm9000.heartbeat_port,
                          hm9000.heartbeat_address, hm9000.start_subject,
                          hm9000.stop_subject),
                         (0, "127.0.0.1", 5335, "10.0.0.1", "hm9000.start.x",
                          "hm9000.stop.x"))
        self.assertEqual(hm9000.ssl, Hm9000Ssl(**files))
        self.assertEqual(warnings, [])

    def test_hm9000_section_with_hm2_is_warned_and_ignored(self):
        """An hm9000 section is read only with cc_protocol: hm9000."""
        config, warnings = build(hm9000=dict(HM9000_SECTION))
        self.assertIsNone(config.hm9000)
        self.assertEqual(len(warnings), 1)
        self.assertIn("'hm9000' ignored", warnings[0])
        self.assertIn("cc_protocol is hm2", warnings[0])

    def test_unknown_keys_warn_by_name(self):
        """Unknown keys of hm9000 and hm9000.ssl are warned about, with a hint."""
        files = make_files(self)
        _config, warnings = build_hm9000({
            **HM9000_SECTION, "api_prot": 1, "heartbeat_port": 5335,
            "ssl": dict(files, ca_fil="x")})
        self.assertEqual(len(warnings), 2)
        self.assertIn("'hm9000.api_prot'", warnings[0])
        self.assertIn("did you mean 'api_port'", warnings[0])
        self.assertIn("'hm9000.ssl.ca_fil'", warnings[1])

    def test_ssl_without_heartbeat_port_is_warned(self):
        """TLS files without a listener have no effect, and the operator is told."""
        config, warnings = build_hm9000({**HM9000_SECTION, "ssl": {"cert_file": "x"}})
        self.assertIsNone(config.hm9000.ssl)
        self.assertEqual(len(warnings), 1)
        self.assertIn("'hm9000.ssl' has no effect", warnings[0])


class Hm9000FailureTests(SynchronousTestCase):
    def assertFailsOn(self, key, hm9000=None, **raw):
        e = self.assertRaises(ConfigError, build_hm9000, hm9000, **raw)
        self.assertEqual(e.key, key)
        return e

    def test_api_credentials_are_required(self):
        """No insecure default: api_user and api_password must be set."""
        self.assertFailsOn("hm9000.api_user", {"api_password": "p"})
        self.assertFailsOn("hm9000.api_password", {"api_user": "u"})
        self.assertFailsOn("hm9000.api_user", {"api_user": " ", "api_password": "p"})
        e = self.assertRaises(ConfigError, build, cc_protocol="hm9000",
                              bulk_api=dict(BULK))
        self.assertEqual(e.key, "hm9000.api_user")

    def test_section_must_be_a_mapping(self):
        """hm9000 and hm9000.ssl are mappings."""
        self.assertFailsOn("hm9000", ["api_user"])
        self.assertFailsOn("hm9000.ssl", {**HM9000_SECTION, "heartbeat_port": 1,
                                          "ssl": "cert.pem"})

    def test_ports_are_checked(self):
        """Ports are whole numbers from 0 to 65535."""
        for key in ("api_port", "heartbeat_port"):
            for bad in (-1, 65536, "5155", 51.5, True):
                self.assertFailsOn(f"hm9000.{key}", {**HM9000_SECTION, key: bad,
                                                     "ssl": make_files(self)})

    def test_listener_and_api_cannot_share_a_port(self):
        """The heartbeat listener and the app-state API need two ports."""
        self.assertFailsOn("hm9000.heartbeat_port", {
            **HM9000_SECTION, "api_port": 5155, "heartbeat_port": 5155,
            "ssl": make_files(self)})

    def test_addresses_are_checked(self):
        """An address is a non-empty host, not a URL."""
        self.assertFailsOn("hm9000.api_address", {**HM9000_SECTION, "api_address": ""})
        self.assertFailsOn("hm9000.heartbeat_address",
                           {**HM9000_SECTION, "heartbeat_address": "http://x/"})

    def test_subjects_are_checked(self):
        """Subjects are NATS subjects without wildcards or blanks."""
        for bad in ("hm9000.*", "a b", "a..b", "", 5):
            self.assertFailsOn("hm9000.start_subject", {**HM9000_SECTION,
                                                        "start_subject": bad})
        self.assertFailsOn("hm9000.stop_subject", {**HM9000_SECTION, "stop_subject": ">"})

    def test_heartbeat_port_requires_ssl(self):
        """The HTTPS listener needs its TLS files: each one is named when missing."""
        self.assertFailsOn("hm9000.ssl", {**HM9000_SECTION, "heartbeat_port": 5335})
        files = make_files(self)
        for key in ("cert_file", "key_file", "ca_file"):
            ssl = {k: v for k, v in files.items() if k != key}
            self.assertFailsOn(f"hm9000.ssl.{key}",
                               {**HM9000_SECTION, "heartbeat_port": 5335, "ssl": ssl})

    def test_ssl_files_must_be_readable(self):
        """A missing file or a directory fails at start, naming the key and the path."""
        files = make_files(self)
        missing = os.path.join(os.path.dirname(files["ca_file"]), "absent.pem")
        e = self.assertFailsOn("hm9000.ssl.ca_file", {
            **HM9000_SECTION, "heartbeat_port": 5335, "ssl": dict(files, ca_file=missing)})
        self.assertIn(missing, str(e))
        self.assertIn("No such file", str(e))
        e = self.assertFailsOn("hm9000.ssl.key_file", {
            **HM9000_SECTION, "heartbeat_port": 5335,
            "ssl": dict(files, key_file=os.path.dirname(missing))})
        self.assertIn("directory", str(e))


class BulkCredentialsTests(SynchronousTestCase):
    def test_credentials_from_config_in_both_modes(self):
        """bulk_api.user/password are read in either mode."""
        for raw in ({}, {"cc_protocol": "hm9000", "hm9000": dict(HM9000_SECTION)}):
            config, warnings = build(bulk_api=dict(BULK), **raw)
            self.assertEqual((config.bulk_api.user, config.bulk_api.password),
                             ("bulk_api", "bulk-secret"))
            self.assertEqual(warnings, [])

    def test_both_or_neither(self):
        """One without the other fails, naming the missing one."""
        e = self.assertRaises(ConfigError, build,
                              bulk_api={"host": "h", "user": "bulk_api"})
        self.assertEqual(e.key, "bulk_api.password")
        e = self.assertRaises(ConfigError, build,
                              bulk_api={"host": "h", "password": "p"})
        self.assertEqual(e.key, "bulk_api.user")
        e = self.assertRaises(ConfigError, build,
                              bulk_api={"host": "h", "user": "", "password": "p"})
        self.assertEqual(e.key, "bulk_api.user")

    def test_hm9000_requires_configured_credentials(self):
        """HM9000-era CCs answer no credentials request: bulk_api.user is required."""
        e = self.assertRaises(ConfigError, build_hm9000, bulk_api={"host": "h"})
        self.assertEqual(e.key, "bulk_api.user")
        self.assertIn("cc_protocol: hm9000", str(e))

    def test_passwords_are_never_shown(self):
        """The raw config as /varz shows it, and the reprs of the bulk_api and hm9000
        objects, carry neither new password."""
        config, _ = build_hm9000()
        shown = repr(redacted(config.raw)) + repr(config.bulk_api) + repr(config.hm9000)
        for secret in ("bulk-secret", "api-secret"):
            self.assertNotIn(secret, shown)
        self.assertIn("internal_user", shown)


class IntervalDefaultsTests(SynchronousTestCase):
    def test_hm9000_schedule_replaces_hm2_defaults(self):
        """In hm9000 mode, unset crash-schedule keys take HM9000's values; others stay."""
        config, _ = build_hm9000()
        intervals = config.intervals
        for key, value in INTERVAL_DEFAULTS.items():
            self.assertEqual(getattr(intervals, key), value, key)
        self.assertEqual((intervals.flapping_death, intervals.min_restart_delay,
                          intervals.max_restart_delay, intervals.delay_time_noise,
                          intervals.giveup_crash_number, intervals.flapping_timeout),
                         (3, 30, 960, 0, -1, 1920))
        self.assertEqual(intervals.droplet_lost, Intervals().droplet_lost)

    def test_hm2_keeps_its_defaults(self):
        """Without cc_protocol: hm9000, HM 2.0's defaults stand."""
        config, _ = build()
        self.assertEqual(config.intervals, Intervals())

    @given(st.dictionaries(st.sampled_from(sorted(INTERVAL_DEFAULTS)),
                           st.integers(min_value=1, max_value=5000)))
    def test_operator_values_win(self, chosen):
        """For any set of keys the operator sets, those values are kept and every other
        crash-schedule key takes HM9000's default."""
        config, _ = build_hm9000(intervals=dict(chosen))
        for key, default in INTERVAL_DEFAULTS.items():
            self.assertEqual(getattr(config.intervals, key), chosen.get(key, default), key)

    def test_explicit_null_takes_the_mode_default(self):
        """A key given as null is unset, so it takes HM9000's default too."""
        config, _ = build_hm9000(intervals={"flapping_death": None})
        self.assertEqual(config.intervals.flapping_death, 3)


def make_files(case):
    """cert_file, key_file, ca_file: readable files in a fresh directory (contents are
    not read by the config, only checked readable)."""
    directory = case.mktemp()
    os.makedirs(directory)
    files = {}
    for key in ("cert_file", "key_file", "ca_file"):
        path = os.path.join(directory, key + ".pem")
        with open(path, "w") as f:
            f.write("-----BEGIN-----\n")
        files[key] = os.path.abspath(path)
    return files


# Keep the field list of Hm9000Ssl and the helper in step.
assert [f.name for f in attrs.fields(Hm9000Ssl)] == ["cert_file", "key_file", "ca_file"]


class SampleConfigTests(SynchronousTestCase):
    def test_sample_switched_to_hm9000_gets_hm9000_schedule(self):
        """The shipped sample leaves the crash schedule to cc_protocol: switched to hm9000
        (with the keys that mode requires), it runs HM9000's schedule, without warnings."""
        with open(SAMPLE, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        self.assertEqual(raw["cc_protocol"], "hm2")
        raw["cc_protocol"] = "hm9000"
        raw["bulk_api"].update(user="bulk_api", password="p")
        raw["hm9000"] = dict(HM9000_SECTION)
        config, warnings = build_config(raw, {})
        self.assertEqual(warnings, [])
        for key, value in INTERVAL_DEFAULTS.items():
            self.assertEqual(getattr(config.intervals, key), value, key)
