"""Webhooks: signed, at-least-once delivery of thread and run events, read from the event log."""
