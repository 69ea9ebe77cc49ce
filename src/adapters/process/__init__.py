"""ProcessLauncher adapters: local subprocesses, each leading its own process group."""

from codeyard.adapters.process.local import LocalProcessHandle, LocalProcessLauncher
from codeyard.adapters.process.reaper import become_subreaper

__all__ = ["LocalProcessHandle", "LocalProcessLauncher", "become_subreaper"]
