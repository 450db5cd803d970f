"""Finding the Redis master through Redis Sentinel (`ha.sentinels`, `ha.master_name`).

Owns the connections to the sentinels (`SentinelDiscovery`), the endpoint that asks them
for the master's address before each connection attempt (`SentinelMasterEndpoint`), and
the factory whose connections drop a server that is not a master (`MasterFactory`): after
a failover a stale sentinel must not send the HM to a replica, where every lease write
would fail with READONLY. (A live connection to a master that Sentinel demotes is closed
by Sentinel itself, CLIENT KILL TYPE normal, so it reconnects through here.)

txredisapi's own Sentinel class is not used: it waits up to 10 s on the global reactor for
an answer, reconnects to a sentinel after up to 10 s, and a wrong password leaves its
connection open but never usable. Here a sentinel that is not connected is not asked,
each answer is bounded by the reply timeout, and a refusal is reported as for one Redis.
Imported only once HA is configured (txredisapi imports the global reactor).
"""

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from health_manager.ha.endpoint import redis_endpoint


class NoMasterFound(Exception):
    """No connected sentinel named a master that is up."""


def _sentinels_text(addresses):
    """`host:port,host:port` for logs."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SentinelDiscovery:
    """One lazily reconnecting connection to each sentinel, and the question "where is
    the master?" put to those that are connected."""

    def __init__(self, reactor, addresses, master_name, reply_timeout, reconnect_delay,
                 tls=False):
        self._reactor = reactor
        self._addresses = tuple(addresses)
        self.master_name = master_name
        self._timeout = reply_timeout
        self._tls = tls
        self._factories = []
        for host, port in self._addresses:
            # No password: a sentinel's own `requirepass` is not the master's.
            factory = txredisapi.RedisFactory(
                f"{host}:{port}", None, 1, isLazy=True, replyTimeout=reply_timeout,
                convertNumbers=True)
            factory.initialDelay = reconnect_delay / 2
            factory.maxDelay = reconnect_delay
            self._factories.append(factory)

    @property
    def address(self):
        """`sentinel host:port,... master NAME`: safe to log."""
        return f"sentinel {_sentinels_text(self._addresses)} master {self.master_name}"

    def start(self):
        for (host, port), factory in zip(self._addresses, self._factories, strict=True):
            factory.startConnecting(
                redis_endpoint(self._reactor, host, port, self._timeout, self._tls))

    def stop(self):
        return defer.gatherResults([f.disconnect() for f in self._factories],
                                   consumeErrors=True)

    def master_address(self):
        """Fires with (host, port) from the first connected sentinel that names a master
        which is up; fails with NoMasterFound once all of them have answered otherwise."""
        asked = [(address, factory.handler) for address, factory
                 in zip(self._addresses, self._factories, strict=True) if factory.size > 0]
        if not asked:
            return defer.fail(NoMasterFound("no sentinel connected"))
        return first_master(self.master_name, asked)


def first_master(master_name, sentinels):
    """SENTINEL MASTERS to each of `sentinels`, [((host, port), handler), ...]: fires with
    the first (host, port) of `master_name` flagged master and neither down, or fails with
    NoMasterFound saying what each sentinel answered."""
    return _FirstMaster(master_name, sentinels).result


class _FirstMaster:
    """One round of first_master()."""

    def __init__(self, master_name, sentinels):
        self.result: defer.Deferred = defer.Deferred()
        self._name = master_name
        self._pending = len(sentinels)
        self._problems = []
        for address, handler in sentinels:
            d = handler.sentinel_masters()
            d.addCallbacks(self._answered, self._failed, callbackArgs=(address,),
                           errbackArgs=(address,))
            d.addBoth(self._one_done)

    def _answered(self, masters, address):
        where = _sentinels_text([address])
        state = masters.get(self._name)
        if state is None:
            self._problems.append(f"{where} does not monitor {self._name}")
        elif not state["is_master"] or state["is_sdown"] or state["is_odown"]:
            self._problems.append(f"{where} has {self._name} at {state['ip']}:"
                                  f"{state['port']} as {state['flags']}")
        elif not self.result.called:
            self.result.callback((_text(state["ip"]), int(state["port"])))

    def _failed(self, failure, address):
        self._problems.append(f"{_sentinels_text([address])}: {failure.getErrorMessage()}")

    def _one_done(self, _):
        self._pending -= 1
        if self._pending == 0 and not self.result.called:
            self.result.errback(NoMasterFound("; ".join(self._problems)))


@implementer(IStreamClientEndpoint)
class SentinelMasterEndpoint:
    """Connects to whichever server the sentinels name as master at each attempt."""

    log = Logger()

    def __init__(self, reactor, discovery, connect_timeout, tls=False):
        self._reactor = reactor
        self._discovery = discovery
        self._timeout = connect_timeout
        self._tls = tls
        self._master = None
        self._failures = 0

    def connect(self, protocolFactory):  # noqa: N803 (IStreamClientEndpoint's name)
        d = self._discovery.master_address()
        d.addCallbacks(self._found, self._not_found)
        d.addCallback(lambda address: redis_endpoint(
            self._reactor, address[0], address[1], self._timeout, self._tls,
        ).connect(protocolFactory))
        return d

    def _found(self, address):
        if address != self._master:
            self.log.info("HA: the sentinels name {master} at {host}:{port} as master",
                          master=self._discovery.master_name, host=address[0],
                          port=address[1])
        self._master, self._failures = address, 0
        return address

    def _not_found(self, failure):
        # Once per outage, from the second attempt in a row: the first one of a start
        # usually precedes the connections to the sentinels, and ClientService then asks
        # again about once per retry period.
        self._failures += 1
        if self._failures == 2:
            self.log.warn("HA: no master from {address}: {error}",
                          address=self._discovery.address, error=failure.getErrorMessage())
        return failure


class MasterOnlyProtocol(txredisapi.RedisProtocol):
    """A Redis connection that is made usable only when the server's ROLE is master."""

    log = Logger()

    @defer.inlineCallbacks
    def connectionMade(self):
        try:
            if self.password is not None:
                yield self.auth(self.password, self.username)
            role = yield self.role()
        except Exception:
            # AUTH refused: the base class's AUTH below reports it and stops reconnecting.
            role = None
        if role is not None and _text(role[0]) != "master":
            peer = self.transport.getPeer()
            self.log.warn("HA: Redis {host}:{port} is a {role}, not a master: dropped",
                          host=peer.host, port=peer.port, role=_text(role[0]))
            self.transport.loseConnection()
            return
        # AUTH (again, now checked), SELECT, then the connection joins the pool.
        yield txredisapi.RedisProtocol.connectionMade(self)


class MasterFactory(txredisapi.RedisFactory):
    """RedisFactory whose connections refuse to use a replica."""

    protocol = MasterOnlyProtocol
