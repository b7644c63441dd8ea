"""Threadline service: HTTP API, actors, domain logic, auth, config and CLI."""
