"""Credential store encrypted at rest (Fernet) in a local file."""

from codeyard.adapters.secrets_file.store import FernetCredentialStore, generate_key, parse_keys

__all__ = ["FernetCredentialStore", "generate_key", "parse_keys"]
