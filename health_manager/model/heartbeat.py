"""One validated `dea.heartbeat` entry, and the validation that turns raw JSON into it.

Two ways in, one result. `decode_heartbeat_message` is the fast path of ingest: a typed msgspec
decode of a whole message, which answers only for a plainly well-formed message (every
entry valid, no field it does not know). For anything else it answers None and the caller
takes the reference path, orjson plus `parse_heartbeat_entry`, which decides what is
rejected, skipped or ignored. So the fast path can only ever agree with the reference path.
"""

from typing import Annotated, Optional, Union

import msgspec

from health_manager.constants import CRASHED, RUNNING, STARTING

# States whose entries must carry a numeric state_timestamp (PROTOCOL.md §1.2).
_TIMESTAMPED = frozenset((STARTING, RUNNING, CRASHED))

# orjson reads integers beyond 64 bits as floats; msgspec bounds must fit an int64. Larger
# integers fail the fast path, and orjson then decides.
_INT64 = Annotated[int, msgspec.Meta(ge=-2**63, le=2**63 - 1)]
_INDEX = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Heartbeat(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """What one DEA says about one instance: built by `parse_heartbeat_entry`, or decoded
    (and then type-checked) by `decode_heartbeat_message`. Holds no references to other objects,
    so the cycle collector need not track it (gc=False)."""

    droplet: str
    version: str
    instance: str
    index: _INDEX
    state: str
    state_timestamp: Union[_INT64, float, None] = None
    cc_partition: Optional[str] = None  # on the wire, ignored (§1.2)


class HeartbeatMessage(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A whole `dea.heartbeat`: its entries and the id of the DEA that sent it."""

    droplets: list[Heartbeat]
    dea: Optional[str] = None
    prod: Optional[bool] = None


_MESSAGE = msgspec.json.Decoder(HeartbeatMessage)


def decode_heartbeat_message(data: bytes) -> HeartbeatMessage | None:
    """A `dea.heartbeat` payload when the message and all its entries are valid and carry
    only known fields; otherwise None (take the reference path)."""
    try:
        message = _MESSAGE.decode(data)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        return None
    for beat in message.droplets:
        if beat.state_timestamp is None and beat.state in _TIMESTAMPED:
            return None
    return message


def is_index(value: object) -> bool:
    """An instance index: a whole number >= 0 (JSON true/false are not numbers here)."""
    return type(value) is int and value >= 0


def is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def parse_heartbeat_entry(entry: object) -> Heartbeat | None:
    """The Heartbeat for a decoded entry, or None when any field is missing or mistyped."""
    # The checks of is_index / is_number inlined (no calls): the reference path must not
    # be much slower than the fast one, a DEA may well send an extra field.
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
