"""Names shared by the model, the policy and the wire: states, exit reasons, priorities."""

# Instance states. DEAs send STARTING/RUNNING/CRASHED (and EVACUATING from Dec 2013);
# DOWN and FLAPPING exist only inside the health manager.
DOWN = "DOWN"
STARTING = "STARTING"
RUNNING = "RUNNING"
CRASHED = "CRASHED"
FLAPPING = "FLAPPING"
EVACUATING = "EVACUATING"

# Desired app states and package states from the bulk API.
STARTED = "STARTED"
STOPPED = "STOPPED"
STAGED = "STAGED"
PENDING = "PENDING"
FAILED = "FAILED"

# droplet.exited reasons.
EXIT_CRASHED = "CRASHED"
EXIT_STOPPED = "STOPPED"
EXIT_DEA_SHUTDOWN = "DEA_SHUTDOWN"
EXIT_DEA_EVACUATION = "DEA_EVACUATION"

# Nudger priorities: higher is served first.
LOW = 1
NORMAL = 1000
HIGH = 1_000_000

COMPONENT_TYPE = "HealthManager"
