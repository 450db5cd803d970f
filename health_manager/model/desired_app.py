"""One app's desired state, as validated from a /bulk/apps entry."""

import attrs


@attrs.frozen(slots=True)
class DesiredApp:
    id: str
    state: str  # STARTED | STOPPED
    instances: int
    version: str
    package_state: str  # PENDING | STAGED | FAILED
    updated_at: int  # epoch seconds, the CC's updated_at
    memory: int
