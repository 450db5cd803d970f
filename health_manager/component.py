"""VCAP::Component registration: the health manager's identity on the bus.

Owns the identity (type, index, uuid, host, credentials, start), the one-time
`vcap.component.announce`, the answers to `vcap.component.discover`, and the choice of the
local IP the status server binds to (`local_route`, PROTOCOL.md §1.11, §4.2). The Manager
subscribes first, then announces once the status server listens and the bus is up.
"""

import socket
import time
import uuid

import orjson
from twisted.internet import defer
from twisted.logger import Logger

from health_manager.constants import COMPONENT_TYPE

ANNOUNCE_SUBJECT = "vcap.component.announce"
DISCOVER_SUBJECT = "vcap.component.discover"
LOOPBACK = "127.0.0.1"


def local_ip(local_route, socket_factory=socket.socket):
    """The source address the kernel would use to reach `local_route`, or None.

    As VCAP does: "connect" a UDP socket (no packet is sent) and read its own address.
    """
    if local_route is None:
        return None
    try:
        with socket_factory(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((local_route, 1))
            return probe.getsockname()[0]
    except (OSError, UnicodeError, ValueError):
        return None


def format_start(epoch_seconds):
    """A start time as `YYYY-MM-DD HH:MM:SS +0000` (UTC), the form Ruby's Time#to_s gives."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(epoch_seconds))


def format_uptime(seconds):
    """Elapsed seconds as `<d>d:<h>h:<m>m:<s>s`, as VCAP::Component shows uptime."""
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d:{hours}h:{minutes}m:{secs}s"


def random_uuid_hex():
    return uuid.uuid4().hex


class Component:
    """The health manager as a VCAP component: announced once, answering discover."""

    log = Logger()

    def __init__(self, config, bus, clock, uuid_factory=random_uuid_hex, start_time=None):
        self._config = config
        self._bus = bus
        self._clock = clock
        self._start_time = clock.seconds() if start_time is None else start_time
        self.uuid = f"{config.index}-{uuid_factory()}"
        self.host = None
        self._subscription = None

    def identity(self):
        """The object announced, and (plus uptime) given to discover and /varz."""
        status = self._config.status
        return {
            "type": COMPONENT_TYPE,
            "index": self._config.index,
            "uuid": self.uuid,
            "host": self.host,
            "credentials": [status.user, status.password],
            "start": format_start(self._start_time),
        }

    def uptime(self):
        return format_uptime(self._clock.seconds() - self._start_time)

    def subscribe(self):
        """Answer `vcap.component.discover` from now on. Returns the subscription Deferred
        (failures are logged, not raised)."""
        d = self._bus.subscribe(DISCOVER_SUBJECT, self._on_discover)
        d.addCallbacks(self._subscribed, self._subscribe_failed)
        return d

    def announce(self, host):
        """Publish the identity once on `vcap.component.announce`; `host` is the status
        server's listening `ip:port`, known only once it listens."""
        self.host = host
        self._bus.publish(ANNOUNCE_SUBJECT, orjson.dumps(self.identity()))
        self.log.info("announced component {uuid} at {host}", uuid=self.uuid, host=host)
        if self._config.status.credentials_generated:
            self.log.info(
                "status credentials were generated: user {user}, password available via "
                "vcap.component.discover", user=self._config.status.user)

    def unsubscribe(self):
        """Stop answering discover. Returns a Deferred."""
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return defer.succeed(None)
        return subscription.unsubscribe()

    def _subscribed(self, subscription):
        self._subscription = subscription
        return subscription

    def _subscribe_failed(self, failure):
        self.log.failure("cannot subscribe to {subject}", failure, subject=DISCOVER_SUBJECT)

    def _on_discover(self, message):
        # Any body is a valid discover; only where to answer matters.
        if not message.reply:
            self.log.debug("discover without a reply subject ignored")
            return
        reply = self.identity()
        reply["uptime"] = self.uptime()
        self._bus.publish(message.reply, orjson.dumps(reply))
