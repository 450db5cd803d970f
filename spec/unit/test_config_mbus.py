"""Config: `mbus` / `MBUS_URI` as a NATS cluster, several nats:// URIs separated by commas."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import ConfigError, build_config, redact_servers, redact_uri

BULK = {"host": "api.vcap.me"}
CLUSTER = "nats://nats:s3cret@10.0.0.1:4222,nats://nats:s3cret@10.0.0.2:4222"


def build(mbus, environ=None):
    raw = {"bulk_api": BULK} if mbus is None else {"mbus": mbus, "bulk_api": BULK}
    return build_config(raw, environ or {}, token_hex=lambda n: "r" * (2 * n))


class ClusterTests(SynchronousTestCase):
    def test_comma_separated_servers_in_order(self):
        """Each server of the list, in the order given, spaces around commas dropped."""
        config, warnings = build("nats://nats:s3cret@10.0.0.2:4222 , nats://nats:s3cret@10.0.0.1:4222")
        self.assertEqual(config.mbus, ("nats://nats:s3cret@10.0.0.2:4222",
                                       "nats://nats:s3cret@10.0.0.1:4222"))
        self.assertEqual(warnings, [])

    def test_one_server_is_a_cluster_of_one(self):
        config, _ = build("nats://nats:s3cret@10.0.0.1:4222/")
        self.assertEqual(config.mbus, ("nats://nats:s3cret@10.0.0.1:4222/",))

    def test_yaml_list_reads_as_the_comma_separated_string(self):
        """mbus: [a, b] is the same as mbus: "a,b"."""
        self.assertEqual(build(CLUSTER.split(","))[0].mbus, build(CLUSTER)[0].mbus)

    def test_mbus_uri_takes_a_cluster(self):
        """MBUS_URI replaces mbus with its whole list."""
        config, _ = build("nats://x:4222", {"MBUS_URI": CLUSTER})
        self.assertEqual(config.mbus, tuple(CLUSTER.split(",")))

    def test_a_server_listed_twice_is_used_once_with_a_warning(self):
        config, warnings = build(CLUSTER + ",nats://nats:s3cret@10.0.0.1:4222")
        self.assertEqual(config.mbus, tuple(CLUSTER.split(",")))
        self.assertEqual(warnings, ["config key 'mbus' lists "
                                    "'nats://nats:***@10.0.0.1:4222' twice; it is used once"])

    def test_comma_in_a_password(self):
        """A comma starts another server only where a URI follows: a password holding
        one (valid in a single mbus URI before clusters) still works."""
        config, _ = build("nats://nats:a,b@10.0.0.1:4222,nats://nats:a,b@10.0.0.2:4222")
        self.assertEqual(config.mbus, ("nats://nats:a,b@10.0.0.1:4222",
                                       "nats://nats:a,b@10.0.0.2:4222"))
        self.assertEqual(build("nats://nats:a,b@h:4222")[0].mbus, ("nats://nats:a,b@h:4222",))

    def test_redact_servers(self):
        self.assertEqual(redact_servers(CLUSTER.split(",")),
                         "nats://nats:***@10.0.0.1:4222,nats://nats:***@10.0.0.2:4222")

    def test_redact_token_and_unparsable_userinfo(self):
        """A user alone is a token; 'nats:pw@h' (no '//') parses without a password but
        holds one: both are hidden."""
        self.assertEqual(redact_uri("nats://t0ken@h:4222"), "nats://***@h:4222")
        self.assertEqual(redact_uri("nats:s3cret@h:4222"), "***@h:4222")


class ClusterFailureTests(SynchronousTestCase):
    def assertFails(self, mbus, key="mbus", environ=None):
        error = self.assertRaises(ConfigError, build, mbus, environ)
        self.assertEqual(error.key, key)
        self.assertNotIn("s3cret", str(error))
        return error

    def test_bad_second_server_named_without_password(self):
        """A bad URI anywhere in the list fails naming mbus, its password redacted."""
        error = self.assertFails("nats://nats:s3cret@10.0.0.1:4222,http://nats:s3cret@h:4222")
        self.assertIn("'http://nats:***@h:4222'", str(error))

    def test_bad_port_in_the_list(self):
        error = self.assertFails("nats://nats:s3cret@10.0.0.1:4222,nats://nats:s3cret@h:99999")
        self.assertIn("invalid port", str(error))

    def test_bad_server_in_mbus_uri_names_the_variable(self):
        error = self.assertFails(None, "MBUS_URI", {"MBUS_URI": CLUSTER + ",tcp://h:1"})
        self.assertTrue(str(error).startswith("environment variable MBUS_URI: "), str(error))

    def test_empty_entry(self):
        """A comma too many (or two in a row) is an error, not a server skipped."""
        for mbus in (CLUSTER + ",", "," + CLUSTER, CLUSTER.replace(",", ",,")):
            error = self.assertFails(mbus)
            self.assertIn("empty server address", str(error))
        self.assertIn("non-empty", str(self.assertFails("  ")))

    def test_servers_with_different_credentials(self):
        """The client uses one set of credentials on every server, also on those the
        cluster announces: differing ones are refused, not silently replaced."""
        error = self.assertFails("nats://nats:s3cret@10.0.0.1:4222,nats://other:s3cret@h:4222")
        self.assertIn("same user and password", str(error))
        self.assertFails("nats://nats:s3cret@10.0.0.1:4222,nats://h:4222")

    def test_not_a_string(self):
        for mbus in (4222, {"uri": "nats://h:4222"}, ["nats://h:4222", 5], []):
            self.assertFails(mbus)

    def test_missing(self):
        self.assertIn("is required", str(self.assertFails(None)))


# Passwords may hold anything a URI's userinfo can carry unescaped, commas included.
# "***" is what a redacted password reads as: a password of only stars cannot be told from
# its redaction, so it is left out.
PASSWORDS = st.text(st.sampled_from("abcXYZ019-_.~!$&'()*+,;="), min_size=1,
                    max_size=12).filter(lambda p: p.strip("*"))
HOSTS = st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
                           st.integers(1, 65535)),
                 min_size=1, max_size=5, unique=True)


class ClusterPropertyTests(SynchronousTestCase):
    @given(password=PASSWORDS, hosts=HOSTS, spaces=st.sampled_from(["", " ", "  "]))
    def test_every_listed_server_comes_back_in_order(self, password, hosts, spaces):
        uris = [f"nats://nats:{password}@{host}:{port}" for host, port in hosts]
        config, warnings = build(f"{spaces},{spaces}".join(uris))
        self.assertEqual(config.mbus, tuple(uris))
        self.assertEqual(warnings, [])

    @given(password=PASSWORDS, hosts=HOSTS, data=st.data())
    def test_one_bad_server_fails_without_showing_the_password(self, password, hosts, data):
        uris = [f"nats://nats:{password}@{host}:{port}" for host, port in hosts]
        bad = data.draw(st.integers(0, len(uris) - 1))
        # (Without any scheme a server would read as part of the password before it.)
        uris[bad] = uris[bad].replace("nats://", data.draw(st.sampled_from(
            ["http://", "redis://", "tcp://"])))
        error = self.assertRaises(ConfigError, build, ",".join(uris))
        self.assertEqual(error.key, "mbus")
        self.assertNotIn(f":{password}@", str(error))
