"""Observability of the worker manager: Prometheus metrics and structured (JSON) logs."""
