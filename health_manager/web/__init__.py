"""What the status port serves: /varz, /healthz, /metrics, /v1/apps and the status page,
each reading the health manager through one read-only StateView."""
