"""A TCP proxy on loopback that delays every chunk sent to the server: a slow Redis.

Each command then takes `delay` seconds longer to be answered, while pipelined commands
still flow (latency, not a lower throughput), as a Redis across a slow link would.
"""

from twisted.internet import protocol, reactor


class _ToServer(protocol.Protocol):
    def __init__(self, client):
        self.client = client

    def connectionMade(self):
        self.client.server = self
        for data in self.client.pending:
            self.transport.write(data)
        self.client.pending = []

    def dataReceived(self, data):
        self.client.transport.write(data)

    def connectionLost(self, reason):
        self.client.transport.loseConnection()


class _FromClient(protocol.Protocol):
    def __init__(self, proxy):
        self.proxy = proxy
        self.server = None
        self.pending = []

    def connectionMade(self):
        self.proxy.clients.add(self)
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _ToServer(self)
        reactor.connectTCP(self.proxy.host, self.proxy.port, factory)

    def dataReceived(self, data):
        call = reactor.callLater(self.proxy.delay, self._forward, data)
        self.proxy.delayed.add(call)

    def _forward(self, data):
        self.proxy.delayed = {c for c in self.proxy.delayed if c.active()}
        if self.server is None:
            self.pending.append(data)
        else:
            self.server.transport.write(data)

    def connectionLost(self, reason):
        self.proxy.clients.discard(self)
        if self.server is not None:
            self.server.transport.loseConnection()


class DelayProxy(protocol.Factory):
    """Listens on a free loopback port (`listen_port`) and forwards to host:port."""

    def __init__(self, host, port, delay):
        self.host, self.port, self.delay = host, port, delay
        self.clients = set()
        self.delayed = set()
        self._listening = None

    def buildProtocol(self, addr):
        return _FromClient(self)

    def start(self):
        self._listening = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.listen_port = self._listening.getHost().port
        return self

    async def stop(self):
        for call in self.delayed:
            if call.active():
                call.cancel()
        for client in list(self.clients):
            client.transport.loseConnection()
        await self._listening.stopListening()
