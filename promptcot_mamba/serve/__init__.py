"""The OpenAI-compatible HTTP server over the generation engine (needs the `serve` extra)."""
