"""A simulated CF v2 foundation: fake Cloud Controller, simulated DEAs, embedded NATS."""
