"""Health Manager 2.0's contract (PROTOCOL.md): `health.start` / `health.stop` with
`running` maps, the `healthmanager.*` queries, credentials over NATS."""
