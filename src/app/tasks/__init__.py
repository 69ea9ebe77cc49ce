"""Coding tasks: fan-out to workers, review, merge."""
