"""The configuration: HM 2.0's YAML keys turned into one frozen, validated object.

Every key of the Ruby original is read with its default; `0` is a value, not "unset".
Invalid values raise ConfigError naming the key; unknown keys become warnings.
"""

import difflib
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

# A mapping as YAML gives it: keys are strings, values anything.
RawMapping = dict[str, Any]
TokenHex = Callable[[int], str]


class ConfigError(Exception):
    """A configuration value that the health manager cannot run with."""

    def __init__(self, key: str, problem: str) -> None:
        if key.startswith("--"):
            where = key
        elif key.isupper():
            where = f"environment variable {key}"
        else:
            where = f"config key {key!r}"
        super().__init__(f"{where}: {problem}")
        self.key = key
        self.problem = problem


LOG_LEVELS = ("off", "fatal", "error", "warn", "info", "debug", "debug1", "debug2", "all")


@attrs.frozen
class Intervals:
    """HM 2.0's code DEFAULTS. Checked against cf-release's health_manager_next job spec:
    droplet_lost, droplets_analysis, flapping_*, min/max_restart_delay agree; where the
    two differ the field says so."""

    # cf-release's template writes `expected_state_update` (default 60), which HM 2.0
    # never read, so this stays 60 there; it is warned about as having no effect.
    desired_state_update: float = 60
    desired_state_lost: float = 180
    droplet_lost: float = 30
    droplets_analysis: float = 20
    request_queue: float = 1
    queue_batch_size: int = 40
    flapping_death: int = 1
    flapping_timeout: float = 500
    min_restart_delay: int = 60
    max_restart_delay: float = 480
    # HM 2.0's code default; its sample config/health_manager.yml said 10.
    delay_time_noise: float = 5
    # HM 2.0's code default; cf-release's job spec defaulted to -1 (never give up). A
    # drop-in keeps the code's 4; set -1 to behave as a cf-release deployment did.
    giveup_crash_number: int = 4
    droplet_gc_grace_period: float = 240
    droplet_gc: float = 300
    bulk_credentials_timeout: float = 5
    # Extension: seconds a bulk-API request may take before it counts as a transport error.
    bulk_request_timeout: float = 30


@attrs.frozen
class LoggingConfig:
    # HM 2.0's default; cf-release's template hard-coded `debug`.
    level: str = "info"
    file: str | None = None
    syslog: str | None = None
    json: bool = False


@attrs.frozen
class BulkApiConfig:
    host: str
    batch_size: int = 500


@attrs.frozen
class StatusConfig:
    port: int
    user: str
    password: str
    credentials_generated: bool


@attrs.frozen
class Config:
    mbus: str
    bulk_api: BulkApiConfig
    status: StatusConfig
    intervals: Intervals = Intervals()
    logging: LoggingConfig = LoggingConfig()
    local_route: str | None = None
    pid: str | None = None
    index: int = 0
    cc_partition: str = "default"
    number_of_droplets_analyzed_per_analysis_iteration: int = 200
    black_box_test_mode: bool = False
    # Extension: heartbeats carrying more entries than this are rejected whole.
    max_heartbeat_entries: int = 10_000
    # Extension: several HMs on one Redis (DESIGN.md §8); None means one HM, no Redis.
    ha: "HaConfig | None" = None
    # The raw mapping as read (after overrides), for /varz with secrets removed.
    raw: RawMapping = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def bulk_credentials_subject(self) -> str:
        return f"cloudcontroller.bulk.credentials.{self.cc_partition}"


# Which intervals are counts (integers) rather than periods, and which periods drive a
# timer (0 would spin the reactor) rather than a comparison (0 is a meaningful value).
_COUNT_INTERVALS = {"queue_batch_size", "flapping_death", "giveup_crash_number"}
_TIMER_PERIODS = {
    "desired_state_update", "droplets_analysis", "request_queue", "droplet_gc",
    "bulk_credentials_timeout", "bulk_request_timeout",
}
_NEGATIVE_ALLOWED = {"giveup_crash_number"}
# HM 2.0 read the first three but never used them; cf-release's health_manager_next job
# wrote the last three, which HM 2.0 never read. A warning says so instead of silence.
_UNUSED_INTERVALS = {"analysis_delay", "postpone_update", "run_loop_interval",
                     "expected_state_update", "restart_timeout", "stable_state"}

_TOP_LEVEL_KEYS = {
    "mbus", "local_route", "logging", "pid", "index", "bulk_api", "status", "cc_partition",
    "number_of_droplets_analyzed_per_analysis_iteration", "black_box_test_mode",
    "health_manager_component_registry", "intervals", "max_heartbeat_entries",
    "ha",
}


def load_config(path: str, environ: Mapping[str, str] | None = None,
                token_hex: TokenHex = secrets.token_hex) -> tuple[Config, list[str]]:
    """Read `path` and return (Config, warnings). Raises ConfigError for anything invalid."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{path} is not valid YAML: {_one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of keys, not {_kind(raw)}")
    return build_config(raw, os.environ if environ is None else environ, token_hex)


def build_config(raw: Mapping[str, Any], environ: Mapping[str, str],
                 token_hex: TokenHex = secrets.token_hex) -> tuple[Config, list[str]]:
    """Validate a mapping as read from YAML; returns (Config, warnings)."""
    warnings: list[str] = []
    raw = dict(raw)
    if environ.get("MBUS_URI"):
        raw["mbus"] = environ["MBUS_URI"]
    logging_raw = _section(raw, "logging")
    level_key = "logging.level"
    if environ.get("LOG_LEVEL"):
        logging_raw = dict(logging_raw, level=environ["LOG_LEVEL"])
        raw["logging"] = logging_raw
        level_key = "LOG_LEVEL"

    _warn_unknown(raw, None, _TOP_LEVEL_KEYS, warnings)

    mbus = _required_str(raw, "mbus")
    _check_nats_uri(mbus, "MBUS_URI" if environ.get("MBUS_URI") else "mbus")

    intervals_raw = _section(raw, "intervals")
    interval_values: dict[str, Any] = {}  # int for a count, float for a period: _interval
    known_intervals = {f.name for f in attrs.fields(Intervals)}
    for key, value in intervals_raw.items():
        name = f"intervals.{key}"
        if key in _UNUSED_INTERVALS:
            warnings.append(f"config key {name!r} has no effect (HM 2.0 did not use it either)")
        elif key not in known_intervals:
            warnings.append(_unknown(name, key, known_intervals))
        elif value is not None:
            interval_values[key] = _interval(name, key, value)
    intervals = Intervals(**interval_values)
    if not isinstance(intervals.min_restart_delay, int):
        raise ConfigError("intervals.min_restart_delay", "must be a whole number of seconds")

    bulk_raw = _section(raw, "bulk_api")
    _warn_unknown(bulk_raw, "bulk_api", {"host", "batch_size"}, warnings)
    host = _required_str(bulk_raw, "host", "bulk_api.host")
    if not host.startswith(("http://", "https://")):
        host = "http://" + host
    batch_size = _int(bulk_raw, "batch_size", "bulk_api.batch_size", 500, minimum=1,
                      numeric_string=True)

    status_raw = _section(raw, "status")
    _warn_unknown(status_raw, "status", {"port", "user", "password"}, warnings)
    port = _int(status_raw, "port", "status.port", 0, minimum=0)
    if port > 65535:
        raise ConfigError("status.port", f"must be at most 65535, got {port}")
    user = _optional_str(status_raw, "user", "status.user")
    password = _optional_str(status_raw, "password", "status.password")
    generated = user is None or password is None
    status = StatusConfig(
        port=port,
        user=user if user is not None else token_hex(16),
        password=password if password is not None else token_hex(16),
        credentials_generated=generated,
    )

    _warn_unknown(logging_raw, "logging",
                  {"level", "default_log_level", "file", "syslog", "json", "max_retries",
                   "fluentd"}, warnings)
    level = logging_raw.get("level")
    if level is None:
        level = logging_raw.get("default_log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(level_key, f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    for ignored in ("max_retries", "fluentd"):
        if logging_raw.get(ignored) is not None:
            warnings.append(f"config key 'logging.{ignored}' has no effect here")
    logging_config = LoggingConfig(
        level=level.lower(),
        file=_optional_str(logging_raw, "file", "logging.file"),
        syslog=_optional_str(logging_raw, "syslog", "logging.syslog"),
        json=_bool(logging_raw, "json", "logging.json"),
    )

    config = Config(
        mbus=mbus,
        bulk_api=BulkApiConfig(host=host.rstrip("/"), batch_size=batch_size),
        status=status,
        intervals=intervals,
        logging=logging_config,
        local_route=_optional_str(raw, "local_route", "local_route"),
        pid=_optional_str(raw, "pid", "pid"),
        index=_int(raw, "index", "index", 0, minimum=0),
        cc_partition=_optional_str(raw, "cc_partition", "cc_partition") or "default",
        number_of_droplets_analyzed_per_analysis_iteration=_int(
            raw, "number_of_droplets_analyzed_per_analysis_iteration",
            "number_of_droplets_analyzed_per_analysis_iteration", 200, minimum=1),
        black_box_test_mode=_bool(raw, "black_box_test_mode", "black_box_test_mode"),
        max_heartbeat_entries=_int(raw, "max_heartbeat_entries", "max_heartbeat_entries",
                                   10_000, minimum=1),
        ha=parse_ha(raw, warnings),
        raw=raw,
    )
    return config, warnings


# -- ha: several health managers on one Redis (DESIGN.md §8) -----------------------------

@attrs.frozen
class HaConfig:
    """The `ha` section: where the lease lives and how long it lasts (seconds).

    With `sentinels`, the master is whichever server the sentinels name for `master_name`,
    so there is no fixed host and port; `ha.redis`, if given, then supplies only the
    password, database and TLS."""

    redis_host: str | None
    redis_port: int | None
    redis_db: int
    redis_password: str | None = attrs.field(repr=False)
    redis_tls: bool
    redis_uri: str | None  # with the password redacted, for logs; None without ha.redis
    lease_duration: float = 15
    renew_deadline: float = 10
    retry_period: float = 2
    key_prefix: str = "health_manager"
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    # With `etcd`, the lease and journal live in etcd (v2 keys API) instead of Redis.
    etcd: tuple[str, ...] = ()
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None


_ETCD_TLS_KEYS = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")
_HA_KEYS = ("redis", "lease_duration", "renew_deadline", "retry_period", "key_prefix",
            "sentinels", "master_name", "etcd", *_ETCD_TLS_KEYS)


def parse_ha(raw: dict[str, Any], warnings: list[str]) -> HaConfig | None:
    """The `ha` section as HaConfig, or None without one (or in black-box test mode)."""
    if raw.get("ha") is None:
        return None
    section = _section(raw, "ha")
    if raw.get("black_box_test_mode") is True:
        warnings.append("config key 'ha' ignored in black-box test mode (one HM, no Redis)")
        return None
    _warn_unknown(section, "ha", set(_HA_KEYS), warnings)
    sentinels = _sentinels(section)
    periods: dict[str, float] = {}
    for key in ("lease_duration", "renew_deadline", "retry_period"):
        value = section.get(key, attrs.fields_dict(HaConfig)[key].default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"ha.{key}", f"must be a finite number of seconds, got {value!r}")
        periods[key] = value
    if not (periods["lease_duration"] > periods["renew_deadline"]
            > periods["retry_period"] > 0):
        raise ConfigError(
            "ha", "ha.lease_duration > ha.renew_deadline > ha.retry_period > 0 "
            "must hold, got {lease_duration} > {renew_deadline} > {retry_period}".format(
                **periods))
    prefix = section.get("key_prefix", "health_manager")
    if not isinstance(prefix, str) or not prefix.strip():
        raise ConfigError("ha.key_prefix", f"must be a non-empty string, got {prefix!r}")
    prefix = prefix.strip()
    if section.get("etcd") is not None:
        return _etcd_ha(section, prefix, periods)
    for key in _ETCD_TLS_KEYS:
        if section.get(key) is not None:
            raise ConfigError(f"ha.{key}", "is only used with ha.etcd, which is not set")
    if not sentinels:
        if section.get("master_name") is not None:
            raise ConfigError("ha.master_name", "is only used with ha.sentinels, which is "
                                                "not set")
        if section.get("redis") is None:
            raise ConfigError("ha.redis", "is required (or ha.sentinels with ha.master_name, "
                                          "or ha.etcd)")
        uri = _required_str(section, "redis", "ha.redis")
        host, port, db, password, tls = _redis_uri(uri)
        return HaConfig(redis_host=host, redis_port=port, redis_db=db,
                        redis_password=password, redis_tls=tls, redis_uri=redact_uri(uri),
                        key_prefix=prefix, lease_duration=periods["lease_duration"],
                        renew_deadline=periods["renew_deadline"],
                        retry_period=periods["retry_period"])
    master_name = section.get("master_name")
    if master_name is None:
        raise ConfigError("ha.master_name", "is required with ha.sentinels")
    master_name = _required_str(section, "master_name", "ha.master_name")
    db, password, tls, shown = 0, None, False, None
    if section.get("redis") is not None:
        uri = _required_str(section, "redis", "ha.redis")
        host, port, db, password, tls = _redis_uri(uri)
        shown = redact_uri(uri)
        warnings.append(f"config key 'ha.redis': its host:port {host}:{port} is not used "
                        "with ha.sentinels (the sentinels name the master); only its "
                        "password, database and TLS are")
    return HaConfig(redis_host=None, redis_port=None, redis_db=db, redis_password=password,
                    redis_tls=tls, redis_uri=shown, sentinels=sentinels,
                    master_name=master_name, key_prefix=prefix,
                    lease_duration=periods["lease_duration"],
                    renew_deadline=periods["renew_deadline"],
                    retry_period=periods["retry_period"])


def _etcd_ha(section: Mapping[str, Any], prefix: str,
             periods: dict[str, float]) -> HaConfig:
    """The `ha` section with `ha.etcd`: the members' URLs and their TLS files."""
    others = [f"ha.{key}" for key in ("redis", "sentinels", "master_name")
              if section.get(key) is not None]
    if others:
        raise ConfigError("ha.etcd", "takes exactly one of ha.redis, ha.sentinels or ha.etcd "
                                     f"(ha.redis may accompany ha.sentinels), got ha.etcd and "
                                     f"{' and '.join(others)}")
    members = _etcd_members(section.get("etcd"))
    files = {key: _tls_file(section, key) for key in _ETCD_TLS_KEYS}
    for key, pair in (("etcd_cert_file", "etcd_key_file"), ("etcd_key_file", "etcd_cert_file")):
        if files[key] is None and files[pair] is not None:
            raise ConfigError(f"ha.{key}", f"is required with ha.{pair} (a client "
                                           "certificate and its key go together)")
    _check_etcd_tls(files)
    if not any(m.startswith("https://") for m in members):
        for key, path in files.items():
            if path is not None:
                raise ConfigError(f"ha.{key}", "is only used with https:// members in ha.etcd")
    return HaConfig(redis_host=None, redis_port=None, redis_db=0, redis_password=None,
                    redis_tls=False, redis_uri=None, etcd=members, key_prefix=prefix,
                    lease_duration=periods["lease_duration"],
                    renew_deadline=periods["renew_deadline"],
                    retry_period=periods["retry_period"],
                    etcd_ca_file=files["etcd_ca_file"], etcd_cert_file=files["etcd_cert_file"],
                    etcd_key_file=files["etcd_key_file"])


def _etcd_members(value: object) -> tuple[str, ...]:
    """`ha.etcd` as ("scheme://host:port", ...): every member of one etcd cluster."""
    usage = "must be a non-empty list of http(s)://host:port URLs (the etcd members)"
    if not isinstance(value, list) or not value:
        raise ConfigError("ha.etcd", f"{usage}, got {value!r}")
    members: list[str] = []
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError("ha.etcd", f"{usage}, got the entry {entry!r}")
        parts = urlsplit(entry.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("ha.etcd", f"{usage}, got the entry {entry!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("ha.etcd", f"has an invalid port in {entry!r}") from None
        if port is None:
            raise ConfigError("ha.etcd", f"needs the client port in {entry!r} (cf-release's "
                                         "etcd listens on 4001)")
        if "@" in parts.netloc:
            raise ConfigError("ha.etcd", f"takes no user or password in {entry!r} (use "
                                         "client certificates)")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ConfigError("ha.etcd", f"takes no path, query or fragment: {entry!r}")
        member = f"{parts.scheme}://{parts.netloc}"
        if member in members:
            raise ConfigError("ha.etcd", f"lists {entry!r} twice")
        members.append(member)
    if len({m.split(":", 1)[0] for m in members}) > 1:
        raise ConfigError("ha.etcd", f"mixes http:// and https:// members: {members!r}")
    return tuple(members)


def _tls_file(section: Mapping[str, Any], key: str) -> str | None:
    """The path of a readable file named by `ha.{key}`, or None."""
    path = section.get(key)
    if path is None:
        return None
    name = f"ha.{key}"
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(name, f"must be the path of a PEM file, got {path!r}")
    path = path.strip()
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(name, f"cannot be read: {e.strerror or e} ({path})") from None
    return path


def _check_etcd_tls(files: dict[str, str | None]) -> None:
    """Each TLS file holds what its key says (PEM certificates, an unencrypted private key
    matching the certificate): the HM would otherwise fail at its first etcd call."""
    # cryptography comes with Twisted[tls] (pyOpenSSL); only an etcd config needs it.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(key: str) -> bytes:
        with open(str(files[key]), "rb") as f:
            return f.read()

    def public(key: Any) -> bytes:
        return bytes(key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))

    if files["etcd_ca_file"] is not None:
        try:
            x509.load_pem_x509_certificates(read("etcd_ca_file"))
        except ValueError:
            raise ConfigError("ha.etcd_ca_file", "holds no PEM certificate: "
                              f"{files['etcd_ca_file']}") from None
    if files["etcd_cert_file"] is None:
        return
    try:
        certificate = x509.load_pem_x509_certificate(read("etcd_cert_file"))
    except ValueError:
        raise ConfigError("ha.etcd_cert_file", "holds no PEM certificate: "
                          f"{files['etcd_cert_file']}") from None
    try:
        private = serialization.load_pem_private_key(read("etcd_key_file"), password=None)
    except (ValueError, TypeError):
        raise ConfigError("ha.etcd_key_file", "holds no unencrypted PEM private key: "
                          f"{files['etcd_key_file']}") from None
    if public(private.public_key()) != public(certificate.public_key()):
        raise ConfigError("ha.etcd_key_file", "is not the key of ha.etcd_cert_file")


def _sentinels(section: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """`ha.sentinels` as ((host, port), ...); () when absent."""
    value = section.get("sentinels")
    if value is None:
        return ()
    usage = "must be a non-empty list of host:port strings"
    if not isinstance(value, list) or not value:
        raise ConfigError("ha.sentinels", f"{usage}, got {value!r}")
    found: list[tuple[str, int]] = []
    for entry in value:
        if not isinstance(entry, str) or ":" not in entry:
            raise ConfigError("ha.sentinels", f"{usage}, got the entry {entry!r}")
        host, _, port_text = entry.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # [::1]:26379
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/@[]" for c in host):
            raise ConfigError("ha.sentinels", f"has an invalid host in {entry!r}")
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError("ha.sentinels", f"has an invalid port in {entry!r}")
        address = (host, int(port_text))
        if address in found:
            raise ConfigError("ha.sentinels", f"lists {entry!r} twice")
        found.append(address)
    return tuple(found)


def _redis_uri(uri: str) -> tuple[str, int, int, str | None, bool]:
    """(host, port, db, password, tls) of redis://[:password@]host[:port][/db]."""
    shown = redact_uri(uri)
    usage = "must be a redis://[:password@]host:port/db URI (rediss:// for TLS)"
    parts = urlsplit(uri)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError("ha.redis", f"{usage}, got {shown!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError("ha.redis", f"has an invalid port: {shown!r}") from None
    if "@" in parts.netloc and not parts.password:
        raise ConfigError("ha.redis", f"names a user but no password: {shown!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError("ha.redis", f"database must be a number, got {path!r} in {shown!r}")
    if parts.query or parts.fragment:
        raise ConfigError("ha.redis", f"takes no query or fragment: {shown!r}")
    return parts.hostname, port, int(path or 0), parts.password, parts.scheme == "rediss"


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def _kind(value: object) -> str:
    return type(value).__name__


def _section(raw: Mapping[str, Any], key: str) -> RawMapping:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {_kind(value)}")
    return value


def _warn_unknown(section: Mapping[str, Any], prefix: str | None, known: set[str],
                  warnings: list[str]) -> None:
    for key in section:
        if key not in known:
            warnings.append(_unknown(key if prefix is None else f"{prefix}.{key}", key, known))


def _unknown(name: str, key: object, known: set[str]) -> str:
    """The warning for an unknown key, with the closest known key as a hint."""
    warning = f"unknown config key {name!r} ignored"
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f"{warning} (did you mean {close[0]!r}?)" if close else warning


def _required_str(section: Mapping[str, Any], key: str, name: str | None = None) -> str:
    name = name or key
    value = section.get(key)
    if value is None:
        raise ConfigError(name, "is required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(name, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _optional_str(section: Mapping[str, Any], key: str, name: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(name, f"must be a string, got {_kind(value)}")
    return str(value)


def _bool(section: Mapping[str, Any], key: str, name: str) -> bool:
    value = section.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {value!r}")
    return value


def _int(section: Mapping[str, Any], key: str, name: str, default: int,
         minimum: int | None = None, numeric_string: bool = False) -> int:
    value = section.get(key)
    if value is None:
        return default
    if numeric_string and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _interval(name: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a whole number" if key in _COUNT_INTERVALS else "a number of seconds"
        raise ConfigError(name, f"must be {kind}, got {value!r}")
    if key in _COUNT_INTERVALS and not isinstance(value, int):
        raise ConfigError(name, f"must be a whole number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be finite, got {value!r}")
    if value < 0 and key not in _NEGATIVE_ALLOWED:
        raise ConfigError(name, f"must not be negative, got {value!r}")
    if value == 0 and key in _TIMER_PERIODS:
        raise ConfigError(name, "must be greater than 0 (it is the period of a timer)")
    return value


def _check_nats_uri(uri: str, key: str = "mbus") -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ConfigError(key, "must be a nats://[user:password@]host:port URI, got "
                               f"{redact_uri(uri)!r}")
    try:
        _ = parts.port  # urlsplit checks the port only when .port is read
    except ValueError:
        raise ConfigError(key, f"has an invalid port: {redact_uri(uri)!r}") from None


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, safe for logs and errors."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


_SECRET_KEYS = {"mbus", "service_mbus", "redis", "keys", "database_environment", "password",
                "pass", "token", "health_manager_component_registry"}


def redacted(raw: Any) -> Any:
    """The config mapping with every secret key removed at any depth (as VCAP::Component)."""
    if isinstance(raw, dict):
        return {k: redacted(v) for k, v in raw.items() if k not in _SECRET_KEYS}
    if isinstance(raw, list):
        return [redacted(v) for v in raw]
    return raw
