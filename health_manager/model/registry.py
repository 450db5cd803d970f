"""The droplet registry: every droplet the health manager knows, in insertion order."""

from health_manager.model.droplet import Droplet


class DropletRegistry:
    """droplet id -> Droplet; iteration yields droplets in the order they were first seen."""

    __slots__ = ("_droplets",)

    def __init__(self):
        self._droplets = {}

    def get(self, droplet_id):
        return self._droplets.get(droplet_id)

    def get_or_create(self, droplet_id, now):
        droplet = self._droplets.get(droplet_id)
        if droplet is None:
            droplet = self._droplets[droplet_id] = Droplet(droplet_id, now)
        return droplet

    def apply_desired(self, app, now, asked_at=None):
        """Record one app's desired state (§5.2), read from a page requested at `asked_at`
        (default: now); returns its droplet."""
        droplet = self.get_or_create(app.id, now)
        droplet.set_desired(app, now, now if asked_at is None else asked_at)
        return droplet

    def mark_described(self, droplet_id, now):
        """The CC listed this app but its entry was unreadable: it still exists, so it is
        neither an extra app nor garbage; its last readable desired state stays."""
        self.get_or_create(droplet_id, now).desired_state_update_timestamp = now

    def remove(self, droplet_id):
        """Forget a droplet; returns it, or None if it was unknown."""
        return self._droplets.pop(droplet_id, None)

    def snapshot(self):
        """A list of the droplets now known, safe to walk while the registry changes."""
        return list(self._droplets.values())

    def __contains__(self, droplet_id):
        return droplet_id in self._droplets

    def __len__(self):
        return len(self._droplets)

    def __iter__(self):
        return iter(self._droplets.values())
