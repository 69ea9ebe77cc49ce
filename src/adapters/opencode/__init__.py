"""opencode adapters."""
