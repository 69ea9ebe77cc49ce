"""OpenCode: ``opencode serve`` driven over HTTP (see :mod:`.agent`)."""

from codeyard.adapters.opencode.agent import OpencodeCodeAgent, opencode_agent
from codeyard.adapters.opencode.config import OpencodeConfig
from codeyard.adapters.opencode.events import PROVIDER, EventMapper

__all__ = ["PROVIDER", "EventMapper", "OpencodeCodeAgent", "OpencodeConfig", "opencode_agent"]
