"""The event log: event types, the Postgres event store, schema migrations."""
