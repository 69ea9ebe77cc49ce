"""Claude Code adapter: the provider spec and stream-json parser run by the shared CLI loop.

``ClaudeSpec`` describes one turn (argv, env, interrupt); ``ClaudeStreamParser`` maps its
stdout lines to normalized payloads. The shared ``CliCodeAgent`` runs them through a
``ProcessLauncher`` (local subprocess or ``docker exec``).
"""

from codeyard.adapters.claude.parser import ClaudeStreamParser
from codeyard.adapters.claude.spec import CLAUDE_INTERRUPT, ClaudeConfig, ClaudeSpec

__all__ = ["CLAUDE_INTERRUPT", "ClaudeConfig", "ClaudeSpec", "ClaudeStreamParser"]
