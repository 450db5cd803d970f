"""HM9000's contract (HM9000.md): `hm9000.start` / `hm9000.stop`, one per index or
instance; the app-state API (NATS `app.state`, `app.state.bulk`, HTTP
`POST /bulk_app_state`); DEA heartbeats over HTTPS."""
