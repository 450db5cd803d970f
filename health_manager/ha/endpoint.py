"""The TCP (or TLS) endpoint to one Redis server, a master or a sentinel.

Its own module so that the connection (connection.py) depends on discovery (sentinel.py)
and never the reverse: both build their endpoints here.
"""

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS


def redis_endpoint(reactor, host, port, timeout, tls):
    """A TCP endpoint to host:port, wrapped in TLS (checked against `host`) when asked."""
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint
