"""codex adapters."""
