"""A PolicyRig with the operator surface on top: its StateView and a StatusServer site."""

import base64

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from health_manager.component import Component
from health_manager.leadership import SingleLeadership
from health_manager.web.state_view import StateView
from health_manager.web.status_server import StatusServer, Vitals
from spec.unit.policy_rig import PolicyRig

USER, PASSWORD = "op", "op-secret"


class ViewRig(PolicyRig):
    """The policy on a fake clock, plus StateView and a status site on the same clock."""

    def __init__(self, intervals=None, leadership=None, **top):
        top.setdefault("status", {"port": 0, "user": USER, "password": PASSWORD})
        super().__init__(intervals, **top)
        self.leadership = leadership or SingleLeadership()
        self.started_at = self.now()
        self.view = StateView(self.config, self.scheduler, self.registry, self.metrics,
                              self.desired, self.freshness, self.leadership, self.bus,
                              self.nudger, self.started_at)
        self.bus.add_connection_listener(self.freshness.on_connection_changed)
        self.freshness.on_connection_changed(True)
        component = Component(self.config, self.bus, self.clock, lambda: "0" * 32)
        self.server = StatusServer(self.config, self.metrics, component, self.view,
                                   self.clock, self.clock,
                                   vitals=Vitals(self.clock, lambda: {}))

    def get(self, path, authorization=None):
        """(code, headers, body) of GET `path`, the reactor turned until it is answered."""
        protocol = self.server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        if authorization is None:
            authorization = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: hm\r\n"
                              b"Connection: close\r\nAuthorization: " + authorization
                              + b"\r\n\r\n")
        for _ in range(10_000):
            if transport.disconnecting or b"\r\n\r\n" in transport.value() and (
                    b"content-length" in transport.value().lower()):
                break
            self.clock.advance(0)
        raw_head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = raw_head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split(b" ")[1]), headers, body

    def warm_up(self):
        """Make the actual state fresh (connected for droplet_lost seconds)."""
        self.advance(self.intervals.droplet_lost)
