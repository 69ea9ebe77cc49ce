"""The exact npm release of each agent CLI that codeyard runs (installs and images pin it)."""

from __future__ import annotations

from typing import NamedTuple


class Pin(NamedTuple):
    """One npm package pinned to an exact version and the binary it provides."""

    package: str
    version: str
    binary: str


#: provider -> pinned npm package. Must match the PINS table of ``scripts/install-agents``
#: (tests/unit/test_model_server_agents.py checks both agree). A plain ``npm install`` may
#: resolve an older cached release: always install ``package@version``.
PINNED: dict[str, Pin] = {
    "claude": Pin("@anthropic-ai/claude-code", "2.1.330", "claude"),
    "droid": Pin("droid", "0.215.0", "droid"),
    "opencode": Pin("opencode-ai", "1.18.33", "opencode"),
    "codex": Pin("@openai/codex", "0.169.0", "codex"),
    "gemini": Pin("@google/gemini-cli", "0.61.0", "gemini"),
}
