"""process adapters."""
