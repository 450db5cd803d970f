"""One validated `dea.heartbeat` entry, and the validation that turns raw JSON into it."""

from health_manager.constants import CRASHED, RUNNING, STARTING

# States whose entries must carry a numeric state_timestamp (PROTOCOL.md §1.2).
_TIMESTAMPED = frozenset((STARTING, RUNNING, CRASHED))


class Heartbeat:
    """What one DEA says about one instance; built only by `parse_heartbeat_entry`."""

    __slots__ = ("droplet", "version", "instance", "index", "state", "state_timestamp")

    def __init__(self, droplet, version, instance, index, state, state_timestamp):
        self.droplet = droplet
        self.version = version
        self.instance = instance
        self.index = index
        self.state = state
        self.state_timestamp = state_timestamp

    def __repr__(self):
        return (f"Heartbeat({self.droplet!r}, {self.version!r}, {self.instance!r}, "
                f"{self.index!r}, {self.state!r}, {self.state_timestamp!r})")


def is_index(value):
    """An instance index: a whole number >= 0 (JSON true/false are not numbers here)."""
    return type(value) is int and value >= 0


def is_number(value):
    return type(value) is float or type(value) is int


def parse_heartbeat_entry(entry):
    """The Heartbeat for a decoded entry, or None when any field is missing or mistyped."""
    # The hot path of ingest: the checks of is_index / is_number inlined (no calls).
    if type(entry) is not dict:
        return None
    get = entry.get
    droplet = get("droplet")
    version = get("version")
    instance = get("instance")
    index = get("index")
    state = get("state")
    if (type(droplet) is not str or type(version) is not str or type(instance) is not str
            or type(state) is not str or type(index) is not int or index < 0):
        return None
    state_timestamp = get("state_timestamp")
    kind = type(state_timestamp)
    if kind is not float and kind is not int:
        if state in _TIMESTAMPED:
            return None
        state_timestamp = None
    return Heartbeat(droplet, version, instance, index, state, state_timestamp)
