"""Shared machinery of the CLI-driven agent adapters: line parsing protocol, invocation
description, the watchdog-guarded run loop, secret redaction."""
