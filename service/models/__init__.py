"""Model providers: what answers a run's model calls (OpenAI-compatible servers and builtin models)."""
