"""The `ha` config section: lease periods, the Redis URI or the sentinels, and black-box
mode ignoring it."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import ConfigError, build_config, redacted
from health_manager.testing.tls import tls_files

MINIMAL = {"mbus": "nats://127.0.0.1:4222/", "bulk_api": {"host": "api.vcap.me"}}


def build(ha, **top):
    return build_config(dict(MINIMAL, ha=ha, **top), {}, token_hex=lambda n: "r" * (2 * n))


class HaConfigTests(SynchronousTestCase):
    def test_absent_means_one_hm(self):
        """Without an `ha` section there is no HA config and no warning."""
        config, warnings = build_config(MINIMAL, {})
        self.assertIsNone(config.ha)
        self.assertEqual(warnings, [])

    def test_defaults_follow_kubernetes(self):
        """Only `redis` given: lease 15, deadline 10, retry 2, prefix health_manager."""
        config, warnings = build({"redis": "redis://127.0.0.1:6380/2"})
        ha = config.ha
        self.assertEqual((ha.redis_host, ha.redis_port, ha.redis_db, ha.redis_password,
                          ha.redis_tls), ("127.0.0.1", 6380, 2, None, False))
        self.assertEqual((ha.lease_duration, ha.renew_deadline, ha.retry_period,
                          ha.key_prefix), (15, 10, 2, "health_manager"))
        self.assertEqual(warnings, [])

    def test_every_key_read(self):
        """All five keys are read; rediss:// means TLS and the password is kept."""
        config, _ = build({"redis": "rediss://:s3cret@redis.local/0", "lease_duration": 3,
                           "renew_deadline": 2, "retry_period": 0.5, "key_prefix": "cf1"})
        ha = config.ha
        self.assertEqual((ha.redis_host, ha.redis_port, ha.redis_password, ha.redis_tls),
                         ("redis.local", 6379, "s3cret", True))
        self.assertEqual((ha.lease_duration, ha.renew_deadline, ha.retry_period,
                          ha.key_prefix), (3, 2, 0.5, "cf1"))
        self.assertNotIn("s3cret", ha.redis_uri)
        self.assertNotIn("s3cret", repr(ha))

    def test_period_order_enforced(self):
        """lease_duration > renew_deadline > retry_period > 0, else an error naming them."""
        for periods in ({"lease_duration": 10, "renew_deadline": 10},
                        {"renew_deadline": 2, "retry_period": 2},
                        {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0},
                        {"lease_duration": 3, "renew_deadline": 2, "retry_period": -1}):
            with self.assertRaises(ConfigError) as caught:
                build(dict({"redis": "redis://127.0.0.1"}, **periods))
            message = str(caught.exception)
            for key in ("ha.lease_duration", "ha.renew_deadline", "ha.retry_period"):
                self.assertIn(key, message)

    def test_non_numeric_period(self):
        """A period that is not a finite number names its key."""
        for value in ("15", True, float("nan"), None):
            with self.assertRaises(ConfigError) as caught:
                build({"redis": "redis://127.0.0.1", "lease_duration": value})
            self.assertEqual(caught.exception.key, "ha.lease_duration")

    def test_bad_redis_uri(self):
        """Malformed URIs, a user without password, or a non-numeric db fail on ha.redis."""
        for uri in ("127.0.0.1:6379", "http://127.0.0.1", "redis://", "redis://h:port",
                    "redis://user@127.0.0.1", "redis://:@127.0.0.1", "redis://h/db0",
                    "redis://h/0?x=1", 6379):
            with self.assertRaises(ConfigError, msg=uri) as caught:
                build({"redis": uri})
            self.assertEqual(caught.exception.key, "ha.redis")

    def test_error_hides_password(self):
        """An invalid URI's error does not show its password."""
        with self.assertRaises(ConfigError) as caught:
            build({"redis": "redis://:hunter2@127.0.0.1:x"})
        self.assertNotIn("hunter2", str(caught.exception))

    def test_redis_missing(self):
        """An `ha` section without `redis` (also an empty one) fails on ha.redis."""
        for section in ({"lease_duration": 15}, {}):
            with self.assertRaises(ConfigError) as caught:
                build(section)
            self.assertEqual(caught.exception.key, "ha.redis")

    def test_not_a_mapping(self):
        """`ha` must be a mapping."""
        with self.assertRaises(ConfigError) as caught:
            build("redis://127.0.0.1")
        self.assertEqual(caught.exception.key, "ha")

    def test_unknown_key_warned(self):
        """An unknown key inside `ha` is a warning, not an error."""
        _, warnings = build({"redis": "redis://127.0.0.1", "sentinal": "x"})
        self.assertEqual(warnings, ["unknown config key 'ha.sentinal' ignored (did you mean "
                                    "'sentinels'?)"])

    def test_black_box_ignores_ha(self):
        """Black-box test mode ignores `ha` with exactly one warning."""
        config, warnings = build({"redis": "redis://127.0.0.1"}, black_box_test_mode=True)
        self.assertIsNone(config.ha)
        self.assertEqual(len(warnings), 1)
        self.assertIn("'ha'", warnings[0])

    def test_varz_config_view_drops_the_uri(self):
        """The redacted config (for /varz) has no Redis URI, so no Redis password."""
        config, _ = build({"redis": "redis://:pw@127.0.0.1", "retry_period": 1})
        self.assertEqual(redacted(config.raw)["ha"], {"retry_period": 1})


SENTINELS = ["127.0.0.1:26379", "sentinel-2.local:26380", "[::1]:26381"]


class SentinelConfigTests(SynchronousTestCase):
    def test_sentinels_without_redis(self):
        """Sentinels and a master name alone: no host:port, db 0, no password, no TLS."""
        config, warnings = build({"sentinels": SENTINELS, "master_name": "hm"})
        ha = config.ha
        self.assertEqual(ha.sentinels, (("127.0.0.1", 26379), ("sentinel-2.local", 26380),
                                        ("::1", 26381)))
        self.assertEqual(ha.master_name, "hm")
        self.assertEqual((ha.redis_host, ha.redis_port, ha.redis_db, ha.redis_password,
                          ha.redis_tls, ha.redis_uri), (None, None, 0, None, False, None))
        self.assertEqual(warnings, [])

    def test_redis_gives_password_db_and_tls(self):
        """With sentinels, ha.redis supplies password, db and TLS; a warning says that its
        host:port is not used, and shows no password."""
        config, warnings = build({"sentinels": SENTINELS[:1], "master_name": " hm ",
                                  "redis": "rediss://:s3cret@10.0.0.9:6390/3"})
        ha = config.ha
        self.assertEqual((ha.redis_host, ha.redis_port, ha.redis_db, ha.redis_password,
                          ha.redis_tls), (None, None, 3, "s3cret", True))
        self.assertEqual(ha.master_name, "hm")
        self.assertEqual(len(warnings), 1)
        self.assertIn("'ha.redis'", warnings[0])
        self.assertIn("10.0.0.9:6390 is not used", warnings[0])
        self.assertNotIn("s3cret", warnings[0] + repr(ha) + ha.redis_uri)

    def test_master_name_required_with_sentinels(self):
        """Sentinels without master_name fail on ha.master_name."""
        with self.assertRaises(ConfigError) as caught:
            build({"sentinels": SENTINELS, "redis": "redis://127.0.0.1"})
        self.assertEqual(caught.exception.key, "ha.master_name")
        self.assertIn("required", str(caught.exception))

    def test_master_name_refused_without_sentinels(self):
        """master_name without sentinels fails on ha.master_name."""
        with self.assertRaises(ConfigError) as caught:
            build({"redis": "redis://127.0.0.1", "master_name": "hm"})
        self.assertEqual(caught.exception.key, "ha.master_name")
        self.assertIn("ha.sentinels", str(caught.exception))

    def test_bad_master_name(self):
        """An empty or non-string master_name fails on ha.master_name."""
        for name in ("", "  ", 7, ["hm"]):
            with self.assertRaises(ConfigError, msg=repr(name)) as caught:
                build({"sentinels": SENTINELS, "master_name": name})
            self.assertEqual(caught.exception.key, "ha.master_name")

    def test_bad_sentinels(self):
        """Not a non-empty list of host:port strings, a bad host or port, or a duplicate:
        each fails on ha.sentinels."""
        for sentinels in ([], "127.0.0.1:26379", {"a": 1}, [26379], ["127.0.0.1"],
                          [":26379"], ["127.0.0.1:"], ["127.0.0.1:0"], ["127.0.0.1:65536"],
                          ["127.0.0.1:x"], ["redis://127.0.0.1:26379"], ["a b:26379"],
                          ["127.0.0.1:26379", "127.0.0.1:26379"], [None]):
            with self.assertRaises(ConfigError, msg=repr(sentinels)) as caught:
                build({"sentinels": sentinels, "master_name": "hm"})
            self.assertEqual(caught.exception.key, "ha.sentinels")

    def test_bad_redis_uri_with_sentinels(self):
        """ha.redis is still validated when sentinels are set."""
        with self.assertRaises(ConfigError) as caught:
            build({"sentinels": SENTINELS, "master_name": "hm", "redis": "redis://h/db0"})
        self.assertEqual(caught.exception.key, "ha.redis")

    def test_neither_redis_nor_sentinels(self):
        """Without both, the error names ha.redis and mentions the sentinel option."""
        with self.assertRaises(ConfigError) as caught:
            build({"lease_duration": 15})
        self.assertEqual(caught.exception.key, "ha.redis")
        self.assertIn("ha.sentinels", str(caught.exception))

    def test_varz_config_view_keeps_sentinels(self):
        """The redacted config (for /varz) shows the sentinels and master name, not the
        Redis URI that holds the password."""
        config, _ = build({"sentinels": SENTINELS[:1], "master_name": "hm",
                           "redis": "redis://:pw@127.0.0.1"})
        self.assertEqual(redacted(config.raw)["ha"],
                         {"sentinels": SENTINELS[:1], "master_name": "hm"})


MEMBERS = ["https://10.0.16.20:4001", "https://10.0.16.21:4001"]


class EtcdConfigTests(SynchronousTestCase):
    def setUp(self):
        self.tls = tls_files(self.mktemp())

    def test_members_and_tls_files(self):
        """ha.etcd lists the members; the three TLS files are kept; no Redis is set."""
        files = {"etcd_ca_file": self.tls["ca_file"],
                 "etcd_cert_file": self.tls["client_cert"],
                 "etcd_key_file": self.tls["client_key"]}
        config, warnings = build({"etcd": [" https://10.0.16.20:4001/ ", MEMBERS[1]],
                                  "retry_period": 1, **files})
        ha = config.ha
        self.assertEqual(ha.etcd, tuple(MEMBERS))
        self.assertEqual((ha.etcd_ca_file, ha.etcd_cert_file, ha.etcd_key_file),
                         (files["etcd_ca_file"], files["etcd_cert_file"],
                          files["etcd_key_file"]))
        self.assertEqual((ha.redis_host, ha.redis_uri, ha.sentinels), (None, None, ()))
        self.assertEqual(warnings, [])

    def test_exactly_one_store(self):
        """ha.etcd beside ha.redis or ha.sentinels fails on ha.etcd naming the keys."""
        for other in ({"redis": "redis://127.0.0.1"},
                      {"sentinels": SENTINELS, "master_name": "hm"}):
            with self.assertRaises(ConfigError, msg=repr(other)) as caught:
                build({"etcd": MEMBERS, **other})
            self.assertEqual(caught.exception.key, "ha.etcd")
            for key in ("ha.redis", "ha.sentinels", "ha.etcd"):
                self.assertIn(key, str(caught.exception))

    def test_key_prefix_names_a_directory(self):
        """With etcd the prefix is a directory: "/" alone fails on ha.key_prefix."""
        with self.assertRaises(ConfigError) as caught:
            build({"etcd": MEMBERS, "key_prefix": "//"})
        self.assertEqual(caught.exception.key, "ha.key_prefix")
        config, _ = build({"etcd": MEMBERS, "key_prefix": "cf/hm"})
        self.assertEqual(config.ha.key_prefix, "cf/hm")

    def test_none_of_them(self):
        """Without any store the error names all three."""
        with self.assertRaises(ConfigError) as caught:
            build({"lease_duration": 15})
        for key in ("ha.redis", "ha.sentinels", "ha.etcd"):
            self.assertIn(key, str(caught.exception))

    def test_bad_members(self):
        """Not a non-empty list of http(s)://host:port URLs, no port, a user, a path, a
        duplicate or mixed schemes: each fails on ha.etcd."""
        for members in ([], "http://127.0.0.1:4001", [4001], ["127.0.0.1:4001"],
                        ["etcd://127.0.0.1:4001"], ["http://127.0.0.1"], ["http://h:x"],
                        ["http://u:p@h:4001"], ["http://h:4001/v2/keys"], ["http://h:4001?a=1"],
                        ["http://h:4001", "http://h:4001/"], ["http://a:4001", "https://b:4001"],
                        [None]):
            with self.assertRaises(ConfigError, msg=repr(members)) as caught:
                build({"etcd": members})
            self.assertEqual(caught.exception.key, "ha.etcd")

    def test_tls_files_checked(self):
        """A missing file, one without what its key says (certificates, an unencrypted
        key), a key of another certificate, a certificate without its key (or the
        reverse), TLS files with http:// members or without ha.etcd: each fails at start
        on the file's key."""
        not_pem = self.mktemp()
        with open(not_pem, "w") as f:
            f.write("hello")
        tls = self.tls
        cert, key = tls["client_cert"], tls["client_key"]
        both = {"etcd": MEMBERS, "etcd_cert_file": cert, "etcd_key_file": key}
        cases = [({"etcd": MEMBERS, "etcd_ca_file": "/nonexistent/ca.pem"}, "ha.etcd_ca_file"),
                 ({"etcd": MEMBERS, "etcd_ca_file": not_pem}, "ha.etcd_ca_file"),
                 ({"etcd": MEMBERS, "etcd_ca_file": key}, "ha.etcd_ca_file"),
                 ({"etcd": MEMBERS, "etcd_ca_file": 7}, "ha.etcd_ca_file"),
                 ({**both, "etcd_cert_file": key}, "ha.etcd_cert_file"),
                 ({**both, "etcd_key_file": cert}, "ha.etcd_key_file"),
                 ({**both, "etcd_key_file": tls["stranger_key"]}, "ha.etcd_key_file"),
                 ({"etcd": MEMBERS, "etcd_cert_file": cert}, "ha.etcd_key_file"),
                 ({"etcd": MEMBERS, "etcd_key_file": key}, "ha.etcd_cert_file"),
                 ({**both, "etcd": ["http://h:4001"]}, "ha.etcd_cert_file"),
                 ({"redis": "redis://h", "etcd_ca_file": cert}, "ha.etcd_ca_file")]
        for section, name in cases:
            with self.assertRaises(ConfigError, msg=repr(section)) as caught:
                build(section)
            self.assertEqual(caught.exception.key, name)
