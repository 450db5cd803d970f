"""The pure model: droplets, instances, heartbeats and the registry. No I/O, no clock."""
