"""A scripted model server speaking the four model APIs the agent CLIs use.

``async with ModelServer(scenario) as server:`` serves, in the caller's event loop:

- Anthropic Messages ``POST /v1/messages`` (``?beta=true`` too; SSE or JSON by the body's
  ``stream``) and ``POST /v1/messages/count_tokens``: Claude Code, Droid;
- OpenAI Chat Completions ``POST /v1/chat/completions`` (SSE or JSON): OpenCode, Droid;
- OpenAI Responses ``POST /v1/responses`` (SSE or JSON): Codex, Droid;
- Gemini ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` (also
  ``:generateContent`` and ``:countTokens``): Gemini CLI;
- ``GET /health``, ``HEAD /api/hello`` (Claude Code's connectivity probe), model
  listings (``/v1/models``, ``/v1beta/models``), and 404 for anything else. Every request
  is recorded in ``server.requests``.

**Turn selection is stateless.** The reply to a request is chosen from its body alone:
``scenario.turns[n]`` answers a conversation whose history already holds ``n`` model
responses (consecutive model items count as one response: text plus tool calls, or
parallel calls). So a retried request gets the same reply, a resumed session in a new
process continues where it stopped, and side requests interleave freely. A request that
declares no tools is a side request (title generation, quota probes: every CLI declares
its tools on the main conversation only) and gets ``scenario.side_reply``; a scenario can
replace that rule with ``is_side``. Past the last turn, ``scenario.exhausted`` answers.

A scenario is built from steps: :class:`Text`, :class:`ToolCall` (see :mod:`.tools` for
each CLI's write-file and shell tools), :class:`HttpError`, :class:`Stall`,
:class:`Delay`.

**Several scripts on one server**: ``ModelServer(Router({"[task:a]": a, "[review]": r},
default=...))`` chooses the scenario per conversation by a marker in its first user
message (see :mod:`.router`).
"""

from codeyard.testing.model_server.recording import RecordedRequest
from codeyard.testing.model_server.router import Router
from codeyard.testing.model_server.scenario import (
    Delay,
    HttpError,
    Scenario,
    Stall,
    Step,
    Text,
    ToolCall,
    Usage,
)
from codeyard.testing.model_server.server import ModelServer, interface_ipv4

__all__ = [
    "Delay",
    "HttpError",
    "ModelServer",
    "RecordedRequest",
    "Router",
    "Scenario",
    "Stall",
    "Step",
    "Text",
    "ToolCall",
    "Usage",
    "interface_ipv4",
]
