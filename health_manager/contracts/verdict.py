"""What a Cloud Controller's respondent decides about one start or stop request from the
health manager, whichever contract it came in. The acceptance rules of each contract
(`hm2.acceptance`, `hm9000.acceptance`) are pure functions returning these, so the
simulated CC and the tests share one statement of them."""

from typing import Protocol

import attrs


class CcApp(Protocol):
    """The CC's record of an app, as far as its respondent reads it."""

    guid: str
    version: str
    instances: int
    state: str  # STARTED | STOPPED
    package_state: str  # PENDING | STAGED | FAILED
    staged: bool  # the app has a droplet hash (a droplet was uploaded)


@attrs.frozen
class StartVerdict:
    """`indices`: what the CC starts when it accepts, one DEA start per index."""

    accepted: bool
    reason: str
    indices: tuple[object, ...] = ()


@attrs.frozen
class StopVerdict:
    """`instances`: the guids the CC's `dea.stop` names when it accepts; None for a
    `dea.stop` with no filter (every instance of the app)."""

    accepted: bool
    reason: str
    instances: tuple[object, ...] | None = ()
