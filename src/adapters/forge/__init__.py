"""The local forge: bare git repositories on disk with pull requests, served over git
smart HTTP, a CodeHost that works offline (tests, the demo)."""

from codeyard.adapters.forge.forge import LocalForge
from codeyard.adapters.forge.server import ForgeServer

__all__ = ["ForgeServer", "LocalForge"]
