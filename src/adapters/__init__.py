"""Adapters: one sub-package per technology. They implement the ports structurally."""
