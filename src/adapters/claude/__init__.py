"""claude adapters."""
