"""Where the Cloud Controllers of the two contracts need different policy, the difference
is one of these parameters of the one policy, never a copy of it."""

import attrs


@attrs.frozen
class PolicyParameters:
    # While an app has no STARTING or RUNNING instance, restart only its index 0.
    restart_only_index_zero_while_app_down: bool = False
    # An instance heard EVACUATING gets a replacement at once, and is stopped (as a
    # duplicate) once the replacement runs.
    replace_evacuating_instances: bool = False
    # Start an index only while the app's package is STAGED (not while it restages).
    start_only_staged_apps: bool = False
