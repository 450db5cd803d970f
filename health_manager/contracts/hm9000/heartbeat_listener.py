"""DEA heartbeats over HTTPS (HM9000.md §3.2): `POST /dea/heartbeat` with mutual TLS, on
`hm9000.heartbeat_port` / `hm9000.heartbeat_address`. cf-release v235+ DEAs send their
heartbeats only so.

TLS: `hm9000.ssl.cert_file`/`key_file` are the server's certificate (and chain) and key;
every client must present a certificate that `ssl.ca_file` signed, or the handshake fails
and it gets no HTTP status at all, as with HM9000. TLS 1.2 is the least accepted (the DEAs
of 2016 speak it; HM9000's Go defaults would also have taken older ones).

A body that is not a heartbeat (not JSON, not an object with a `droplets` array) answers
400; an accepted one answers 202, as HM9000's listener did. A body over 1 MiB (NATS's
default max_payload: it could not be relayed) answers 413; HM9000 had no limit. The DEA
retries nothing: it logs any other status and sends its complete list again one heartbeat
interval later (dea_ng `lib/dea/utils/hm9000.rb`).

**One ingest path.** The listener does not apply a heartbeat itself: it relays the body,
the bytes as received, on NATS `dea.heartbeat`, and every HM (leader and standbys alike,
this one included, through NATS's echo of its own publications) ingests it through its
one `dea.heartbeat` subscription, exactly as a heartbeat a pre-v235 DEA sent on NATS.
So a DEA needs to reach only one HM (whichever `listener-hm9000` resolves to, no lock
needed) while every HM holds the whole actual state, ready to lead; and no heartbeat is
ingested twice by the HM that received it. The price is one NATS round trip per heartbeat.
While NATS is disconnected a heartbeat cannot be relayed: the listener answers 503 and
counts it rather than queue it (a queued heartbeat would arrive stale, and without NATS the
actual state is not fresh anyway). The DEA's next heartbeat carries its whole list again.
"""

from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request

from health_manager.config import ConfigError
from health_manager.contracts.hm9000.serving import TEXT, PortService, refuse_other_routes
from health_manager.interfaces import IMessageBus
from health_manager.metrics import Hm9000Counters
from health_manager.web.responses import send
from health_manager.web.status_server import QuietSite

HEARTBEAT_SUBJECT = "dea.heartbeat"
PATH = b"/dea/heartbeat"
BAD_BODY = "bad_body"
TOO_LARGE = "too_large"
NATS_DISCONNECTED = "nats_disconnected"
# NATS's default max_payload (cf-release's nats job keeps it): a bigger body could not be
# relayed, and the bus would drop it after the DEA was told 202.
MAX_BODY = 1024 * 1024


class _HeartbeatShape(msgspec.Struct):
    """What makes a body a heartbeat here: an object with a `droplets` array. The entries
    are checked by the NATS ingest that receives the relayed body (skipped and counted
    there, as for any DEA), so they are only scanned, not decoded (msgspec.Raw)."""

    droplets: list[msgspec.Raw]


_SHAPE = msgspec.json.Decoder(_HeartbeatShape)


def is_heartbeat(body: bytes) -> bool:
    try:
        _SHAPE.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None


def _certificates(path: str, key: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        raise ConfigError(key, f"{path} holds no PEM certificate") from None


def server_tls_options(cert_file: str, key_file: str, ca_file: str) -> ssl.CertificateOptions:
    """Mutual TLS for the listener: this server's certificate (the first in `cert_file`,
    the rest its chain) and key, and every certificate in `ca_file` as the only roots a
    client certificate may chain to; a client certificate is required. ConfigError names
    the `hm9000.ssl` key of a file that cannot be used."""
    chain = _certificates(cert_file, "hm9000.ssl.cert_file")
    try:
        private_key = serialization.load_pem_private_key(
            _read(key_file, "hm9000.ssl.key_file"), password=None)
    except (ValueError, TypeError):
        raise ConfigError("hm9000.ssl.key_file",
                          f"{key_file} holds no unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (chain[0].public_key().public_bytes(serialization.Encoding.PEM, public)
            != private_key.public_key().public_bytes(serialization.Encoding.PEM, public)):
        raise ConfigError("hm9000.ssl.key_file",
                          f"{key_file} is not the key of the certificate in {cert_file}")
    authorities = _certificates(ca_file, "hm9000.ssl.ca_file")
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(private_key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        # With a trustRoot, Twisted verifies the peer's certificate and (requireCertificate
        # defaults to True, and may not be passed beside it) fails a client without one.
        trustRoot=ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in authorities]),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


class HeartbeatResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, bus: IMessageBus, counters: Hm9000Counters) -> None:
        super().__init__()
        self._bus = bus
        self._counters = counters

    def render(self, request: Request) -> bytes:
        refused = refuse_other_routes(request, PATH)
        if refused is not None:
            return refused
        counters = self._counters
        counters.https_heartbeats_received += 1
        body = request.content.read()  # type: ignore[union-attr]  # set for every request
        if len(body) > MAX_BODY:
            counters.count_https_rejected(TOO_LARGE)
            self.log.warn("refused an HTTPS heartbeat from {peer}: {size} bytes, more than "
                          "a NATS message may carry ({limit})", peer=_peer(request),
                          size=len(body), limit=MAX_BODY)
            request.setResponseCode(413)
            return send(request, b"", TEXT)
        if not is_heartbeat(body):
            counters.count_https_rejected(BAD_BODY)
            self.log.warn("refused an HTTPS heartbeat from {peer}: the body is not a "
                          "heartbeat (a JSON object with a 'droplets' array)",
                          peer=_peer(request))
            request.setResponseCode(400)
            return send(request, b"", TEXT)
        if not self._bus.connected:
            counters.count_https_rejected(NATS_DISCONNECTED)
            self.log.warn("refused an HTTPS heartbeat from {peer}: NATS is disconnected, "
                          "so it cannot be relayed", peer=_peer(request))
            request.setResponseCode(503)
            return send(request, b"", TEXT)
        self._bus.publish(HEARTBEAT_SUBJECT, body)
        counters.https_heartbeats_relayed += 1
        request.setResponseCode(202)
        return send(request, b"", TEXT)


def _peer(request: Request) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return str(peer) if host is None else f"{host}:{getattr(peer, 'port', '?')}"


class _ListenerChannel(HTTPChannel):
    """A connection to the listener; one whose TLS failed is reported to its site: the
    DEA gets no HTTP status, so the operator gets a line and a counter instead."""

    site: "_ListenerSite"  # set by Site.buildProtocol

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        if reason.check(SSL.Error) and self.transport is not None:
            self.site.tls_failed(self.transport.getPeer(), reason.value)
        super().connectionLost(reason)


class _ListenerSite(QuietSite):
    # The channel itself, not Twisted's HTTP/2-negotiating wrapper: DEAs speak HTTP/1.1.
    protocol = _ListenerChannel  # type: ignore[assignment]
    tls_log = Logger()  # `log` is the Site's access-log method

    def __init__(self, resource: Resource, counters: Hm9000Counters, reactor: Any) -> None:
        super().__init__(resource, reactor=reactor)
        self._counters = counters

    def tls_failed(self, peer: Any, error: object) -> None:
        self._counters.https_tls_failures += 1
        self.tls_log.warn("TLS with {peer} failed, no heartbeat taken: {error} (a DEA must "
                      "present a client certificate signed by hm9000.ssl.ca_file)",
                      peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '?')}",
                      error=error)


class HeartbeatListener(PortService):
    """`POST /dea/heartbeat` with mutual TLS on `address:port` (port 0: a free one, then
    in `port`)."""

    def __init__(self, reactor: Any, bus: IMessageBus, counters: Hm9000Counters, port: int,
                 address: str, cert_file: str, key_file: str, ca_file: str) -> None:
        """Reads and checks the certificate files at once (ConfigError naming the key)."""
        tls = server_tls_options(cert_file, key_file, ca_file)
        self.site = _ListenerSite(HeartbeatResource(bus, counters), counters, reactor)
        self.site.noisy = False
        super().__init__(
            lambda port, address: reactor.listenSSL(port, self.site, tls, interface=address),
            "hm9000.heartbeat_port", address, port,
            "HTTPS heartbeat listener (POST /dea/heartbeat, mutual TLS)")
