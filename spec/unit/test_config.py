"""Config: every HM 2.0 key with its default, overrides, and start-up failures naming the key."""

import os

import yaml
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import ConfigError, build_config, load_config, redact_uri, redacted

MINIMAL = {"mbus": "nats://nats:secret@127.0.0.1:4222/", "bulk_api": {"host": "api.vcap.me"}}
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "config", "health_manager.yml")


def build(raw=None, environ=None, **overrides):
    raw = dict(MINIMAL if raw is None else raw, **overrides)
    return build_config(raw, environ or {}, token_hex=lambda n: "r" * (2 * n))


class DefaultsTests(SynchronousTestCase):
    def test_every_interval_has_the_hm2_default(self):
        """Absent intervals take HM 2.0's DEFAULTS (delay_time_noise 5, giveup 4, ...)."""
        config, warnings = build()
        i = config.intervals
        self.assertEqual(
            (i.desired_state_update, i.desired_state_lost, i.droplet_lost, i.droplets_analysis,
             i.request_queue, i.queue_batch_size, i.flapping_death, i.flapping_timeout,
             i.min_restart_delay, i.max_restart_delay, i.delay_time_noise,
             i.giveup_crash_number, i.droplet_gc_grace_period, i.droplet_gc,
             i.bulk_credentials_timeout),
            (60, 180, 30, 20, 1, 40, 1, 500, 60, 480, 5, 4, 240, 300, 5))
        self.assertEqual(warnings, [])

    def test_top_level_defaults(self):
        """cc_partition 'default', slice size 200, index 0, batch size 500, black box off."""
        config, _ = build()
        self.assertEqual(config.cc_partition, "default")
        self.assertEqual(config.number_of_droplets_analyzed_per_analysis_iteration, 200)
        self.assertEqual(config.index, 0)
        self.assertEqual(config.bulk_api.batch_size, 500)
        self.assertFalse(config.black_box_test_mode)
        self.assertEqual(config.logging.level, "info")
        self.assertEqual(config.bulk_credentials_subject,
                         "cloudcontroller.bulk.credentials.default")

    def test_bulk_host_gets_http_prefix(self):
        """A bulk_api.host without scheme is prefixed with http:// as HM 2.0 does."""
        config, _ = build()
        self.assertEqual(config.bulk_api.host, "http://api.vcap.me")

    def test_string_batch_size_accepted(self):
        """HM 2.0's default batch_size was the string "500": numeric strings are accepted."""
        config, _ = build(bulk_api={"host": "h", "batch_size": "250"})
        self.assertEqual(config.bulk_api.batch_size, 250)

    def test_random_status_credentials_when_absent(self):
        """Without status.user/password, random 32-hex credentials are generated."""
        config, _ = build()
        self.assertEqual(config.status.user, "r" * 32)
        self.assertEqual(config.status.password, "r" * 32)
        self.assertTrue(config.status.credentials_generated)
        self.assertEqual(config.status.port, 0)

    def test_sample_config_loads_without_warnings(self):
        """The shipped config/health_manager.yml is valid and has no unknown keys."""
        config, warnings = load_config(SAMPLE, environ={})
        self.assertEqual(warnings, [])
        self.assertEqual(config.status.user, "thin")
        self.assertEqual(config.intervals.delay_time_noise, 5)


class ValuesTests(SynchronousTestCase):
    def test_zero_is_honoured(self):
        """0 is a value, not 'use the default' (no `value or default`)."""
        config, _ = build(intervals={"droplet_lost": 0, "delay_time_noise": 0,
                                     "giveup_crash_number": 0, "flapping_death": 0},
                          index=0)
        self.assertEqual(config.intervals.droplet_lost, 0)
        self.assertEqual(config.intervals.delay_time_noise, 0)
        self.assertEqual(config.intervals.giveup_crash_number, 0)
        self.assertEqual(config.intervals.flapping_death, 0)

    def test_negative_giveup_means_never(self):
        """giveup_crash_number may be negative (cf-release default -1: never give up)."""
        config, _ = build(intervals={"giveup_crash_number": -1})
        self.assertEqual(config.intervals.giveup_crash_number, -1)

    def test_black_box_false_means_off(self):
        """black_box_test_mode: false is off (HM 2.0 turned it on for any non-null value)."""
        self.assertFalse(build(black_box_test_mode=False)[0].black_box_test_mode)
        self.assertTrue(build(black_box_test_mode=True)[0].black_box_test_mode)

    def test_mbus_uri_overrides(self):
        """MBUS_URI replaces mbus entirely."""
        config, _ = build(environ={"MBUS_URI": "nats://other:4222"})
        self.assertEqual(config.mbus, ("nats://other:4222",))

    def test_mbus_uri_supplies_missing_mbus(self):
        """With MBUS_URI set, a config without mbus is valid."""
        config, _ = build({"bulk_api": {"host": "h"}}, environ={"MBUS_URI": "nats://n:4222"})
        self.assertEqual(config.mbus, ("nats://n:4222",))

    def test_log_level_overrides(self):
        """LOG_LEVEL replaces logging.level."""
        config, _ = build(logging={"level": "info"}, environ={"LOG_LEVEL": "debug"})
        self.assertEqual(config.logging.level, "debug")

    def test_default_log_level_alias(self):
        """logging.default_log_level is steno's alias of logging.level."""
        config, _ = build(logging={"default_log_level": "warn"})
        self.assertEqual(config.logging.level, "warn")


class WarningTests(SynchronousTestCase):
    def test_unknown_keys_warn_by_name(self):
        """Keys HM 2.0 ignored (expected_state_update, check_nats_availability) warn once each."""
        _, warnings = build(intervals={"expected_state_update": 10,
                                       "check_nats_availability": True},
                            something_else=1)
        self.assertEqual(len(warnings), 3)
        for name in ("intervals.expected_state_update", "intervals.check_nats_availability",
                     "something_else"):
            self.assertTrue(any(name in w for w in warnings), name)

    def test_unknown_key_hints_the_closest_known_key(self):
        """An unknown key's warning suggests the closest known key of its section."""
        _, warnings = build(intervals={"droplet_analysis": 20, "desired_state_updte": 60},
                            status={"prot": 1}, local_rout="127.0.0.1", zzz=1)
        self.assertEqual(sorted(warnings), [
            "unknown config key 'intervals.desired_state_updte' ignored "
            "(did you mean 'desired_state_update'?)",
            "unknown config key 'intervals.droplet_analysis' ignored "
            "(did you mean 'droplets_analysis'?)",
            "unknown config key 'local_rout' ignored (did you mean 'local_route'?)",
            "unknown config key 'status.prot' ignored (did you mean 'port'?)",
            "unknown config key 'zzz' ignored",
        ])

    def test_unused_hm2_keys_warn_that_they_have_no_effect(self):
        """postpone_update / analysis_delay / run_loop_interval are accepted with a warning."""
        _, warnings = build(intervals={"postpone_update": 30})
        self.assertEqual(warnings, [
            "config key 'intervals.postpone_update' has no effect (HM 2.0 did not use it either)"])

    def test_cf_release_job_keys_warn_that_they_have_no_effect(self):
        """health_manager_next's expected_state_update / restart_timeout / stable_state are
        named as having no effect, not as unknown."""
        _, warnings = build(intervals={"expected_state_update": 60, "restart_timeout": 20,
                                       "stable_state": 60})
        self.assertEqual(sorted(warnings), [
            f"config key 'intervals.{key}' has no effect (HM 2.0 did not use it either)"
            for key in ("expected_state_update", "restart_timeout", "stable_state")])


class FailureTests(SynchronousTestCase):
    def assertFailsNaming(self, key, raw=None, environ=None, **overrides):
        error = self.assertRaises(ConfigError, build, raw, environ, **overrides)
        self.assertEqual(error.key, key)
        self.assertIn(repr(key), str(error))
        self.assertNotIn("\n", str(error))
        return error

    def test_wrong_type_interval(self):
        """intervals.droplet_lost: "abc" fails naming the key."""
        self.assertFailsNaming("intervals.droplet_lost", intervals={"droplet_lost": "abc"})

    def test_negative_period(self):
        """A negative period fails naming the key."""
        self.assertFailsNaming("intervals.flapping_timeout", intervals={"flapping_timeout": -5})

    def test_zero_timer_period(self):
        """A timer period of 0 would spin the reactor: it fails naming the key."""
        self.assertFailsNaming("intervals.request_queue", intervals={"request_queue": 0})

    def test_count_must_be_whole(self):
        """queue_batch_size is a count: 2.5 fails."""
        self.assertFailsNaming("intervals.queue_batch_size", intervals={"queue_batch_size": 2.5})

    def test_min_restart_delay_must_be_whole(self):
        """min_restart_delay is bit-shifted in HM 2.0: it must be a whole number."""
        self.assertFailsNaming("intervals.min_restart_delay",
                               intervals={"min_restart_delay": 1.5})

    def test_missing_mbus(self):
        """No mbus and no MBUS_URI fails naming mbus."""
        self.assertFailsNaming("mbus", {"bulk_api": {"host": "h"}})

    def test_missing_bulk_host(self):
        """No bulk_api.host fails naming it (HM 2.0 had no default despite its README)."""
        self.assertFailsNaming("bulk_api.host", {"mbus": "nats://h:4222"})

    def test_bad_mbus_does_not_echo_password(self):
        """An invalid mbus URI is reported without its password."""
        error = self.assertFailsNaming("mbus", mbus="http://u:hunter2@h:4222")
        self.assertNotIn("hunter2", str(error))

    def test_boolean_is_not_a_number(self):
        """true is not a number of seconds."""
        self.assertFailsNaming("intervals.droplet_gc", intervals={"droplet_gc": True})

    def test_bad_black_box_value(self):
        """black_box_test_mode must be a boolean."""
        self.assertFailsNaming("black_box_test_mode", black_box_test_mode="yes")

    def test_bad_log_level(self):
        """An unknown logging.level fails naming it."""
        self.assertFailsNaming("logging.level", logging={"level": "loud"})

    def test_bad_log_level_from_environment(self):
        """LOG_LEVEL=loud fails naming the environment variable, not the config key."""
        error = self.assertRaises(ConfigError, build, environ={"LOG_LEVEL": "loud"})
        self.assertEqual(error.key, "LOG_LEVEL")
        self.assertTrue(str(error).startswith("environment variable LOG_LEVEL: must be one"),
                        str(error))

    def test_bad_mbus_uri_from_environment(self):
        """A bad MBUS_URI fails naming the environment variable."""
        error = self.assertRaises(ConfigError, build, environ={"MBUS_URI": "http://x"})
        self.assertIn("environment variable MBUS_URI", str(error))

    def test_section_must_be_mapping(self):
        """intervals: 5 fails naming intervals."""
        self.assertFailsNaming("intervals", intervals=5)

    def test_status_port_range(self):
        """status.port above 65535 fails."""
        self.assertFailsNaming("status.port", status={"port": 70000})


class FileTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_unreadable_file(self):
        """A missing file fails naming --config and the path."""
        error = self.assertRaises(ConfigError, load_config, "/nonexistent/hm.yml", {})
        self.assertIn("/nonexistent/hm.yml", str(error))

    def test_bad_yaml(self):
        """Bad YAML fails with one line."""
        error = self.assertRaises(ConfigError, load_config, self.write("a: [b\n"), {})
        self.assertIn("not valid YAML", str(error))
        self.assertNotIn("\n", str(error))

    def test_not_a_mapping(self):
        """A YAML list is not a config."""
        self.assertRaises(ConfigError, load_config, self.write("- 1\n"), {})

    def test_file_round_trip(self):
        """A YAML file is read into the same Config as its mapping."""
        path = self.write(yaml.safe_dump(MINIMAL))
        config, _ = load_config(path, {})
        self.assertEqual(config.mbus, (MINIMAL["mbus"],))


class RedactionTests(SynchronousTestCase):
    def test_redact_uri(self):
        """The mbus password never appears in a log line."""
        self.assertEqual(redact_uri("nats://nats:secret@h:4222/"), "nats://nats:***@h:4222/")
        self.assertEqual(redact_uri("nats://h:4222"), "nats://h:4222")

    def test_redacted_config_drops_secrets_at_any_depth(self):
        """mbus, password, token ... are removed at any depth, as VCAP::Component does."""
        raw = {"mbus": "x", "status": {"user": "u", "password": "p"}, "a": [{"token": 1, "b": 2}]}
        self.assertEqual(redacted(raw), {"status": {"user": "u"}, "a": [{"b": 2}]})
