"""Certificates for TLS tests, generated on the spot (no key material in the repository)."""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def tls_files(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files:
    {ca_file, server_cert, server_key, client_cert, client_key, stranger_cert,
    stranger_key} (the stranger's is signed by another CA)."""
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    files = {}

    def write(name, data):
        files[name] = os.path.join(directory, f"{name}.pem")
        with open(files[name], "wb") as f:
            f.write(data)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def certificate(name, key, issuer_name, issuer_key, ca=False, san=None, client=False):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
        if not ca:
            usage = (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                     else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM)

    def authority(name):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return key, subject, certificate(name, key, subject, key, ca=True)

    ca_key, ca_name, ca_pem = authority("hm-test-ca")
    write("ca_file", ca_pem)
    for name, san, client in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                               False), ("client", None, True)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(f"{name}_cert", certificate(f"hm-test-{name}", key, ca_name, ca_key, san=san,
                                          client=client))
        write(f"{name}_key", key_pem(key))
    other_key, other_name, _ = authority("stranger-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    write("stranger_cert", certificate("stranger", key, other_name, other_key, client=True))
    write("stranger_key", key_pem(key))
    return files
