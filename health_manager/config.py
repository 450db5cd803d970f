"""The configuration: HM 2.0's YAML keys turned into one frozen, validated object.

Every key of the Ruby original is read with its default; `0` is a value, not "unset".
Invalid values raise ConfigError naming the key; unknown keys become warnings.
"""

import difflib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

from health_manager.contracts.hm9000 import policy as hm9000_policy

# A mapping as YAML gives it: keys are strings, values anything.
RawMapping = dict[str, Any]
TokenHex = Callable[[int], str]


class ConfigError(Exception):
    """A configuration value that the health manager cannot run with."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{_where(key)}: {problem}")
        self.key = key
        self.problem = problem


def _where(key: str) -> str:
    """How a message names `key`: an option, an environment variable or a config key."""
    if key.startswith("--"):
        return key
    if key.isupper():
        return f"environment variable {key}"
    return f"config key {key!r}"


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
    # Credentials from the config, as HM9000 took them; None: asked over NATS (HM 2.0).
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class StatusConfig:
    port: int
    user: str
    password: str
    credentials_generated: bool


# The Cloud Controller contracts one process can speak (health_manager/contracts).
HM2 = "hm2"
HM9000 = "hm9000"
CC_PROTOCOLS = (HM2, HM9000)
# HM9000's api_server_port, which cf-release's CCs are configured to reach (hm9000.port).
DEFAULT_API_PORT = 5155


@attrs.frozen
class Hm9000Ssl:
    """The heartbeat listener's TLS files: its certificate and key, and the CA that must
    have signed every DEA's client certificate."""

    cert_file: str
    key_file: str
    ca_file: str


@attrs.frozen
class Hm9000Config:
    """The `hm9000` section (HM9000.md §7): the app-state API and the HTTPS heartbeat
    listener. Ports 0 bind any free port (tests)."""

    api_user: str
    api_password: str = attrs.field(repr=False)
    api_port: int = DEFAULT_API_PORT
    api_address: str = "0.0.0.0"
    heartbeat_port: int | None = None
    heartbeat_address: str = "0.0.0.0"
    ssl: Hm9000Ssl | None = None
    start_subject: str = hm9000_policy.START_SUBJECT
    stop_subject: str = hm9000_policy.STOP_SUBJECT


@attrs.frozen
class Config:
    # The NATS servers, in the order given: one, or a cluster's (nats_servers below).
    mbus: tuple[str, ...]
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
    # Which Cloud Controller contract is spoken: HM2 or HM9000 (issue 19).
    cc_protocol: str = HM2
    # The `hm9000` section; None unless cc_protocol is HM9000.
    hm9000: Hm9000Config | None = None
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
    "ha", "cc_protocol", "hm9000",
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

    mbus = nats_servers(raw.get("mbus"), "MBUS_URI" if environ.get("MBUS_URI") else "mbus",
                        warnings)
    cc_protocol = _cc_protocol(raw)

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
    if cc_protocol == HM9000:
        # HM9000's crash schedule, for the keys the operator left unset.
        for key, value in hm9000_policy.INTERVAL_DEFAULTS.items():
            interval_values.setdefault(key, value)
    intervals = Intervals(**interval_values)
    if not isinstance(intervals.min_restart_delay, int):
        raise ConfigError("intervals.min_restart_delay", "must be a whole number of seconds")

    bulk_raw = _section(raw, "bulk_api")
    _warn_unknown(bulk_raw, "bulk_api", {"host", "batch_size", "user", "password"},
                  warnings)
    host = _required_str(bulk_raw, "host", "bulk_api.host")
    if not host.startswith(("http://", "https://")):
        host = "http://" + host
    batch_size = _int(bulk_raw, "batch_size", "bulk_api.batch_size", 500, minimum=1,
                      numeric_string=True)
    bulk_user, bulk_password = _bulk_credentials(bulk_raw, cc_protocol)

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
        bulk_api=BulkApiConfig(host=host.rstrip("/"), batch_size=batch_size,
                               user=bulk_user, password=bulk_password),
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
        cc_protocol=cc_protocol,
        hm9000=parse_hm9000(raw, cc_protocol, warnings),
        raw=raw,
    )
    return config, warnings


# -- the Cloud Controller contract (issue 19) --------------------------------------------

def _cc_protocol(raw: Mapping[str, Any]) -> str:
    value = raw.get("cc_protocol")
    if value is None:
        return HM2
    if not isinstance(value, str) or value not in CC_PROTOCOLS:
        raise ConfigError("cc_protocol", f"must be one of {', '.join(CC_PROTOCOLS)}, "
                                         f"got {value!r}")
    return value


def _bulk_credentials(section: Mapping[str, Any],
                      cc_protocol: str) -> tuple[str | None, str | None]:
    """(user, password) of the bulk API from the config, or (None, None): both or neither.
    HM9000-era Cloud Controllers answer no credentials request over NATS."""
    user = _optional_str(section, "user", "bulk_api.user")
    password = _optional_str(section, "password", "bulk_api.password")
    if user is not None and not user:
        raise ConfigError("bulk_api.user", "must be a non-empty string")
    if user is not None and password is None:
        raise ConfigError("bulk_api.password", "is required with bulk_api.user")
    if password is not None and user is None:
        raise ConfigError("bulk_api.user", "is required with bulk_api.password")
    if user is None and cc_protocol == HM9000:
        raise ConfigError("bulk_api.user", "is required with cc_protocol: hm9000 (its Cloud "
                                           "Controllers answer no credentials request over "
                                           "NATS); bulk_api.password too")
    return user, password


_HM9000_KEYS = {"api_port", "api_address", "api_user", "api_password", "heartbeat_port",
                "heartbeat_address", "ssl", "start_subject", "stop_subject"}
_SSL_KEYS = ("cert_file", "key_file", "ca_file")


def parse_hm9000(raw: Mapping[str, Any], cc_protocol: str,
                 warnings: list[str]) -> Hm9000Config | None:
    """The `hm9000` section as Hm9000Config with cc_protocol hm9000, else None."""
    if cc_protocol != HM9000:
        if raw.get("hm9000") is not None:
            warnings.append(f"config key 'hm9000' ignored: it is read only with cc_protocol: "
                            f"hm9000, and cc_protocol is {cc_protocol}")
        return None
    section = _section(raw, "hm9000")
    _warn_unknown(section, "hm9000", _HM9000_KEYS, warnings)
    api_port = _port(section, "api_port")
    if api_port is None:
        api_port = DEFAULT_API_PORT
    heartbeat_port = _port(section, "heartbeat_port")
    api_address = _address(section, "api_address")
    heartbeat_address = _address(section, "heartbeat_address")
    if (heartbeat_port is not None and heartbeat_port != 0 and heartbeat_port == api_port
            and (heartbeat_address == api_address or "0.0.0.0" in (heartbeat_address,
                                                                     api_address))):
        raise ConfigError("hm9000.heartbeat_port",
                          f"must differ from hm9000.api_port ({api_port}) on one address")
    ssl = _hm9000_ssl(section, heartbeat_port is not None, warnings)
    return Hm9000Config(
        api_user=_required_str(section, "api_user", "hm9000.api_user"),
        api_password=_required_str(section, "api_password", "hm9000.api_password"),
        api_port=api_port,
        api_address=api_address,
        heartbeat_port=heartbeat_port,
        heartbeat_address=heartbeat_address,
        ssl=ssl,
        start_subject=_subject(section, "start_subject", hm9000_policy.START_SUBJECT),
        stop_subject=_subject(section, "stop_subject", hm9000_policy.STOP_SUBJECT),
    )


def _port(section: Mapping[str, Any], key: str) -> int | None:
    """`hm9000.<key>` as a port number, None when absent."""
    if section.get(key) is None:
        return None
    port = _int(section, key, f"hm9000.{key}", 0, minimum=0)
    if port > 65535:
        raise ConfigError(f"hm9000.{key}", f"must be at most 65535, got {port}")
    return port


def _address(section: Mapping[str, Any], key: str) -> str:
    if section.get(key) is None:
        return "0.0.0.0"
    address = _required_str(section, key, f"hm9000.{key}")
    if any(c.isspace() or c in "/@" for c in address):
        raise ConfigError(f"hm9000.{key}", f"must be an IP address, got {address!r}")
    return address


def _subject(section: Mapping[str, Any], key: str, default: str) -> str:
    if section.get(key) is None:
        return default
    subject = _required_str(section, key, f"hm9000.{key}")
    # A NATS subject: dot-separated tokens, no spaces; the CC subscribes without wildcards.
    if any(c.isspace() or c in "*>" for c in subject) or "" in subject.split("."):
        raise ConfigError(f"hm9000.{key}", f"must be a NATS subject without wildcards, "
                                           f"got {subject!r}")
    return subject


def _hm9000_ssl(section: Mapping[str, Any], listening: bool,
                warnings: list[str]) -> Hm9000Ssl | None:
    """The TLS files, each checked readable now so that a typo fails the start, not the
    first DEA's handshake."""
    if section.get("ssl") is None:
        if listening:
            raise ConfigError("hm9000.ssl", "is required with hm9000.heartbeat_port "
                                            "(cert_file, key_file, ca_file)")
        return None
    ssl = section["ssl"]
    if not isinstance(ssl, dict):
        raise ConfigError("hm9000.ssl", f"must be a mapping, got {_kind(ssl)}")
    if not listening:
        warnings.append("config key 'hm9000.ssl' has no effect without "
                        "hm9000.heartbeat_port")
        return None
    _warn_unknown(ssl, "hm9000.ssl", set(_SSL_KEYS), warnings)
    files = {}
    for key in _SSL_KEYS:
        name = f"hm9000.ssl.{key}"
        path = _required_str(ssl, key, name)
        try:
            with open(path, "rb"):
                pass
        except IsADirectoryError:
            raise ConfigError(name, f"{path} is a directory, not a file") from None
        except OSError as e:
            raise ConfigError(name, f"cannot read {path}: {e.strerror}") from None
        files[key] = path
    return Hm9000Ssl(**files)


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
    if not prefix.strip("/"):
        raise ConfigError("ha.key_prefix", f"must name an etcd directory, got {prefix!r}")
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


def nats_servers(value: object, key: str, warnings: list[str]) -> tuple[str, ...]:
    """`mbus`: one nats:// URI, or a cluster's several separated by commas, as the CF clients
    of HM 2.0's era took them (a YAML list is read the same). Each is checked; all must carry
    the same credentials, since the client also uses them on the servers the cluster
    announces (INFO connect_urls), which come without any."""
    if value is None or value == []:
        raise ConfigError(key, "is required")
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(key, "must be a non-empty string")
        items = split_servers(value)
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ConfigError(key, "must be a nats:// URI, or several separated by commas, got "
                               f"{_kind(value)}")
    servers: list[str] = []
    for item in items:
        uri = item.strip()
        if not uri or uri.endswith(","):
            raise ConfigError(key, "holds an empty server address (a comma too many?)")
        _check_nats_uri(uri, key)
        if uri in servers:
            warnings.append(f"{_where(key)} lists {redact_uri(uri)!r} twice; it is used once")
        else:
            servers.append(uri)
    if len({urlsplit(uri).netloc.rpartition("@")[0] for uri in servers}) > 1:
        raise ConfigError(key, "every server must carry the same user and password (or "
                               f"none), got {redact_servers(servers)!r}")
    return tuple(servers)


# A comma starts another server only where a URI follows: a password may hold commas.
_NEXT_SERVER = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_servers(value: str) -> list[str]:
    """`mbus` as written, one string: its servers."""
    return _NEXT_SERVER.split(value)


def redact_servers(servers: Iterable[str]) -> str:
    """The servers as `mbus` lists them, each password replaced: for logs and errors."""
    return ",".join(redact_uri(uri) for uri in servers)


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
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    if "@" in uri:
        # A user alone is a token (so nats-py reads it), and what does not parse as a URI
        # ('nats:pw@h:4222', no '//') may hold a password too: hide all before the '@'.
        return (f"{parts.scheme}://***@" if parts.netloc else "***@") + uri.rpartition("@")[2]
    return uri


_SECRET_KEYS = {"mbus", "service_mbus", "redis", "keys", "database_environment", "password",
                "pass", "token", "health_manager_component_registry", "api_password"}


def redacted(raw: Any) -> Any:
    """The config mapping with every secret key removed at any depth (as VCAP::Component)."""
    if isinstance(raw, dict):
        return {k: redacted(v) for k, v in raw.items() if k not in _SECRET_KEYS}
    if isinstance(raw, list):
        return [redacted(v) for v in raw]
    return raw
