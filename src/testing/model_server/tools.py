"""Each CLI's own write-file and shell tools, as their requests declare them.

Learned from the tool schemas the pinned CLIs send (claude 2.1.330, droid 0.215.0,
opencode 1.18.33, codex 0.169.0, gemini 0.61.0). Pass absolute paths: Claude Code and
OpenCode refuse relative ones. Codex declares no write tool (``exec_command`` only), so
its file write is a shell command.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codeyard.testing.model_server.scenario import ToolCall


@dataclass(frozen=True)
class CliTools:
    """How one CLI's model writes a file and runs a shell command."""

    provider: str
    write_tool: str
    shell_tool: str
    _write_args: Callable[[str, str], dict[str, Any]]
    _shell_args: Callable[[str], dict[str, Any]]

    def write_file(self, path: str, content: str) -> ToolCall:
        return ToolCall(self.write_tool, self._write_args(path, content))

    def shell(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, self._shell_args(command))


def _printf_to(path: str, content: str) -> str:
    # printf '%s' writes the content byte for byte (echo would interpret escapes).
    return f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}"


TOOLS: dict[str, CliTools] = {
    "claude": CliTools(
        "claude",
        "Write",
        "Bash",
        lambda path, content: {"file_path": path, "content": content},
        lambda command: {"command": command, "description": "Run the requested command"},
    ),
    "droid": CliTools(
        "droid",
        "Create",
        "Execute",
        lambda path, content: {"file_path": path, "content": content},
        # ``summary`` is required, 3-8 words starting with a capital letter.
        lambda command: {"command": command, "summary": "Run the requested command"},
    ),
    "opencode": CliTools(
        "opencode",
        "write",
        "bash",
        lambda path, content: {"filePath": path, "content": content},
        lambda command: {"command": command, "description": "Run the requested command"},
    ),
    "codex": CliTools(
        "codex",
        "exec_command",
        "exec_command",
        lambda path, content: {"cmd": _printf_to(path, content)},
        lambda command: {"cmd": command},
    ),
    "gemini": CliTools(
        "gemini",
        "write_file",
        "run_shell_command",
        lambda path, content: {"file_path": path, "content": content},
        lambda command: {"command": command, "description": "Run the requested command"},
    ),
}


def write_file(provider: str, path: str, content: str) -> ToolCall:
    """``provider``'s tool call writing ``content`` to ``path``."""
    return TOOLS[provider].write_file(path, content)


def shell(provider: str, command: str) -> ToolCall:
    """``provider``'s tool call running ``command`` in a shell."""
    return TOOLS[provider].shell(command)
