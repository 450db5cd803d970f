"""Certificates for mutual TLS between simulated DEAs and the health manager's HTTPS
heartbeat listener (HM9000.md §3.2): a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, all signed by that CA, written as PEM files.

Made with `cryptography`, which Twisted[tls] already installs: `simulate` needs them at
run time, so no test-only package (trustme) would do.
"""

import datetime
import ipaddress
import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import ssl

# Long enough for any run, short enough that a leaked key is worth nothing for long.
VALIDITY = datetime.timedelta(days=2)
SERVER_NAMES = ("127.0.0.1", "localhost")


@attrs.frozen
class CertificateFiles:
    """Paths of the PEM files in one directory."""

    ca_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str

    def listener_ssl_config(self):
        """The health manager's `hm9000.ssl` section for these files."""
        return {"cert_file": self.server_cert_file, "key_file": self.server_key_file,
                "ca_file": self.ca_file}


def make_certificates(directory, ca_name="health_manager simulation CA", now=None):
    """Write a new CA and its server and client certificates into `directory` (which must
    exist); returns their CertificateFiles. `now` (a datetime) is for tests."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(ca_name)
    ca_cert = (_builder(ca_subject, ca_subject, ca_key, now)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, key_cert_sign=True, crl_sign=True,
                   content_commitment=False, key_encipherment=False, data_encipherment=False,
                   key_agreement=False, encipher_only=False, decipher_only=False),
                   critical=True)
               .sign(ca_key, hashes.SHA256()))

    def leaf(common_name, usage, names):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (_builder(_name(common_name), ca_subject, key, now)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_names = [x509.IPAddress(ipaddress.ip_address(SERVER_NAMES[0])),
                    x509.DNSName(SERVER_NAMES[1])]
    server_key, server_cert = leaf("health_manager heartbeat listener",
                                   ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    client_key, client_cert = leaf("simulated dea", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = CertificateFiles(*(os.path.join(directory, name) for name in (
        "ca.crt", "server.crt", "server.key", "client.crt", "client.key")))
    _write(files.ca_file, _cert_pem(ca_cert))
    _write(files.server_cert_file, _cert_pem(server_cert))
    _write(files.server_key_file, _key_pem(server_key))
    _write(files.client_cert_file, _cert_pem(client_cert))
    _write(files.client_key_file, _key_pem(client_key))
    return files


def client_tls_options(files, hostname):
    """Twisted client TLS options for a DEA: trusts the CA, presents the client
    certificate, checks that the server is `hostname` (an IP address or a DNS name)."""
    with open(files.ca_file, "rb") as f:
        trust_root = ssl.Certificate.loadPEM(f.read())
    with open(files.client_cert_file, "rb") as f:
        cert_pem = f.read()
    with open(files.client_key_file, "rb") as f:
        key_pem = f.read()
    client = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    return ssl.optionsForClientTLS(hostname, trustRoot=trust_root, clientCertificate=client)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, key, now):
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY))


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data):
    # Keys are secrets even in a simulation: owner-only from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
