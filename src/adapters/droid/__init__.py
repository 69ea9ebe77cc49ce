"""droid adapters."""
