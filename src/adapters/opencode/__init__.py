"""OpenCode: ``opencode serve`` driven over HTTP (see :mod:`.agent`), and one-shot
``opencode run --format json`` turns through the shared CLI run loop (:mod:`.run_spec`,
provider ``opencode-run``)."""

from codeyard.adapters.opencode.agent import OpencodeCodeAgent, opencode_agent
from codeyard.adapters.opencode.config import OpencodeConfig
from codeyard.adapters.opencode.events import PROVIDER, EventMapper
from codeyard.adapters.opencode.run_parser import OpencodeRunParser
from codeyard.adapters.opencode.run_spec import OpencodeRunOptions, OpencodeRunSpec

__all__ = [
    "PROVIDER",
    "EventMapper",
    "OpencodeCodeAgent",
    "OpencodeConfig",
    "OpencodeRunOptions",
    "OpencodeRunParser",
    "OpencodeRunSpec",
    "opencode_agent",
]
