"""The policy's decisions, before any contract renders them: start index i of (app,
version), stop these instances for these reasons. The Harmonizer makes them, the Nudger
sends them through the one contract spoken (health_manager/contracts), so neither knows a
subject or a field name of the Cloud Controller's."""

import attrs

from health_manager.model.droplet import Droplet


@attrs.frozen(slots=True)
class StartOrder:
    """Start `index` of `droplet`'s live `version`; `flapping` when a backoff delay ran."""

    droplet: Droplet = attrs.field(eq=False)
    version: str
    index: int
    flapping: bool = False

    @property
    def app_id(self) -> str:
        return self.droplet.id


@attrs.frozen(slots=True)
class StopTarget:
    """One instance to stop: its version and index, and why (model/droplet.py REASON_*)."""

    version: str
    index: int
    reason: str


@attrs.frozen(slots=True)
class StopOrder:
    """Stop these instances of `droplet` (guid -> StopTarget). `running` is what the policy
    counts as live per version (duplicates and the instances being stopped included)."""

    droplet: Droplet = attrs.field(eq=False)
    instances: dict[str, StopTarget]
    running: dict[str, int]

    @property
    def app_id(self) -> str:
        return self.droplet.id
