"""ActualFreshness: whether the actual state (heartbeats) can be trusted to be complete.

After start-up or a NATS outage, instances the health manager has not heard from yet look
missing. Starts for missing instances are allowed only once NATS has been connected, and
heartbeats could have been heard, for a full `droplet_lost` window (as HM9000's freshness
key). The window opens at connection, not at the first heartbeat: DEAs with no instances
send no heartbeats, and an emptied foundation must still get its missing starts.
"""

from twisted.logger import Logger


class ActualFreshness:
    log = Logger()

    def __init__(self, scheduler, droplet_lost):
        self._scheduler = scheduler
        self._droplet_lost = droplet_lost
        self._since = None  # when the current connected window opened

    def on_connection_changed(self, connected):
        """Bus connection listener: a disconnect closes the window, a connect opens one."""
        if connected:
            if self._since is None:
                self._since = self._scheduler.now()
        elif self._since is not None:
            self.log.info("actual state no longer fresh: message bus disconnected")
            self._since = None

    def on_heartbeat(self):
        """A heartbeat arrived, so the bus is connected even if no listener said so yet."""
        if self._since is None:
            self._since = self._scheduler.now()

    def seconds_left(self):
        """Seconds until the actual state becomes fresh: 0 when fresh, None while the bus
        is disconnected (the window has not opened)."""
        since = self._since
        if since is None:
            return None
        return max(0.0, self._droplet_lost - (self._scheduler.now() - since))

    def is_fresh(self):
        since = self._since
        return since is not None and self._scheduler.now() - since >= self._droplet_lost
