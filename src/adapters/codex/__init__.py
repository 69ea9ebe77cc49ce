"""OpenAI Codex CLI adapter: ``codex exec --json`` driven through the shared CLI run loop."""

from codeyard.adapters.codex.parser import CodexParser
from codeyard.adapters.codex.spec import CodexOptions, CodexSpec

__all__ = ["CodexOptions", "CodexParser", "CodexSpec"]
