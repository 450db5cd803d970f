"""Mutual TLS between simulated DEAs and the health manager's HTTPS heartbeat listener
(HM9000.md §3.2). The certificates are made as the project's TLS tests make them
(`health_manager.testing.tls.tls_files`: a CA, a server certificate for 127.0.0.1, a client
certificate, with `cryptography`, which Twisted[tls] installs), so `simulate` needs no
package beyond the runtime ones. This module turns those files into the health manager's
`hm9000.ssl` section and a DEA's client TLS options.
"""

from twisted.internet import ssl

from health_manager.testing.tls import tls_files

# The listener's address: the server certificate names it (an IP SAN).
LISTENER_HOST = "127.0.0.1"


def make_certificates(directory):
    """Write a new CA and its server and client certificates into `directory`; returns
    their paths (`tls_files`' dict)."""
    return tls_files(directory)


def listener_ssl_config(files):
    """The health manager's `hm9000.ssl` section for these files."""
    return {"cert_file": files["server_cert"], "key_file": files["server_key"],
            "ca_file": files["ca_file"]}


def client_tls_options(files, hostname=LISTENER_HOST, cert="client_cert", key="client_key"):
    """Twisted client TLS options for a DEA: trusts the CA, presents the client certificate
    (`cert`, `key` name which of `files`), checks that the server is `hostname`."""
    with open(files["ca_file"], "rb") as f:
        trust_root = ssl.Certificate.loadPEM(f.read())
    with open(files[cert], "rb") as f:
        cert_pem = f.read()
    with open(files[key], "rb") as f:
        key_pem = f.read()
    client = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    return ssl.optionsForClientTLS(hostname, trustRoot=trust_root, clientCertificate=client)
