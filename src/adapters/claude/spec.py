"""How codeyard runs Claude Code for one turn: argv, environment, interrupt, parser.

One turn is ``claude --print ... -- <prompt>``, printing ``stream-json`` lines (see
:mod:`codeyard.adapters.claude.parser`). Decisions, with the evidence behind them in
/work/shared/FACTS.md and agent-transcripts/claude:

* **Permissions.** With no ``allowed_commands`` the run is fully autonomous:
  ``--dangerously-skip-permissions`` (the worker container is the sandbox), plus
  ``IS_SANDBOX=1`` because the CLI refuses that flag as root without it. With
  ``allowed_commands`` the run is NOT bypassed, since bypass would ignore any allowlist:
  ``--permission-mode acceptEdits`` and ``--allowedTools Bash(<cmd>:*)`` per command (the
  command with any arguments). A Bash call outside the list needs approval, which
  ``--print`` mode denies: a ``system/permission_denied`` line and an error tool result go
  back to the model (measured with 2.1.330). ``acceptEdits`` still lets file edits in the
  workdir through, including shell redirections such as ``echo x > file``.
* **Instructions.** ``request.instructions`` and ``request.system_prompt_append`` are both
  passed through ``--append-system-prompt`` (instructions first). Writing ``CLAUDE.md``
  into the workdir is the worker wrapper's job, not a per-turn one.
* **Prompt.** Last, after ``--``, so a prompt starting with ``-`` is never read as an option
  and the variadic ``--allowedTools`` cannot swallow it.
* **Partial messages.** ``--include-partial-messages`` by default: text arrives as deltas
  while the model writes, so a long answer is not mistaken for an idle CLI.
* **Environment.** Complete and explicit: ``HOME`` is the run's private home (sessions live
  in ``~/.claude/projects/<cwd>``: resume needs the same HOME and the same workdir),
  ``PATH`` (2.1.330 is a native binary; its Bash tool needs bash or zsh on it),
  ``ANTHROPIC_BASE_URL``/``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_MAX_RETRIES`` when set, and
  the switches that stop update checks, telemetry and error reporting. ``request.env`` is
  added last and may override anything but ``HOME``.
* **Interrupt.** SIGINT first: Claude then prints a ``result`` with ``is_error`` and
  ``terminal_reason`` ``aborted_streaming``/``aborted_tools`` and exits within ~1 s.
  SIGTERM next (exit 143, no result), SIGKILL last. The order matters beyond the result:
  Claude runs every Bash tool command in a session of its own (``setsid``), outside the
  CLI's process group; on SIGINT or SIGTERM it kills those itself, on SIGKILL they survive
  (a group kill cannot reach them).
* **Secrets.** The API key/auth token and any ``request.env`` value whose name looks like a
  credential are returned for redaction.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from codeyard.adapters.claude.parser import PROVIDER, ClaudeStreamParser
from codeyard.adapters.cli.types import CliInvocation, InterruptStep
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import InvalidInput, UnsupportedProvider

#: SIGINT is Claude's clean stop (result line and exit within ~1 s, tools killed); SIGTERM
#: ends it without a result (tools killed too); SIGKILL takes what is left of the group.
CLAUDE_INTERRUPT: tuple[InterruptStep, ...] = (
    InterruptStep(signal.SIGINT, 5.0),
    InterruptStep(signal.SIGTERM, 3.0),
    InterruptStep(signal.SIGKILL, 2.0),
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Env names whose values are credentials (redacted from every event and log line).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
#: Characters that would break out of a ``Bash(<cmd>:*)`` rule or the comma-split list.
_RULE_BREAKERS = frozenset("(),\n\r\x00")


@dataclass(frozen=True)
class ClaudeConfig:
    """Where the CLI is and what every turn gets; per-request values win where they exist.

    ``binary`` and ``path`` are as seen where the process runs (host or container).
    """

    binary: str = "claude"
    path: str = DEFAULT_PATH
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    #: Where a turn runs when the request names no ``workdir`` (a worker's workspace).
    workdir: str | None = None
    partial_messages: bool = True
    #: ``CLAUDE_CODE_MAX_RETRIES``: how often the CLI retries a failed model call itself
    #: (None keeps its default of 10, with backoff growing to ~40 s between attempts).
    max_retries: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    interrupt: tuple[InterruptStep, ...] = CLAUDE_INTERRUPT


def allowed_tool_rules(commands: tuple[str, ...]) -> tuple[str, ...]:
    """``("pytest", "git status")`` -> ``("Bash(pytest:*)", "Bash(git status:*)")``: each
    command with any arguments (Claude's prefix-rule syntax)."""
    return tuple(f"Bash({command.strip()}:*)" for command in commands)


class ClaudeSpec:
    """The :class:`~codeyard.adapters.cli.types.ProviderSpec` of Claude Code."""

    def __init__(self, config: ClaudeConfig | None = None) -> None:
        self._config = config or ClaudeConfig()

    @property
    def name(self) -> str:
        return PROVIDER

    @property
    def config(self) -> ClaudeConfig:
        return self._config

    def capabilities(self) -> AgentCapabilities:
        return AgentCapabilities(
            resume=True,
            interrupt=True,
            streaming_deltas=self._config.partial_messages,
            reports_cost=True,
            max_turns=True,
            # total_cost_usd after --resume includes the session's earlier runs (recorded:
            # ../shared/agent-transcripts/claude run1 0.0012, run2-resume 0.0018).
            cumulative_cost=True,
        )

    def check(self, request: AgentRequest) -> None:
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                f"the claude adapter cannot run provider {request.provider!r}",
                provider=request.provider,
            )
        for command in request.allowed_commands:
            if not command.strip() or _RULE_BREAKERS.intersection(command):
                raise InvalidInput(
                    "allowed_commands entries must be non-empty and contain no "
                    "parentheses, commas or line breaks",
                    command=command,
                )
        if request.session_id is not None and (
            not request.session_id.strip() or "\x00" in request.session_id
        ):
            raise InvalidInput("session_id must not be blank", session_id=request.session_id)

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        self.check(request)
        config = self._config
        argv = [config.binary, "--print", "--output-format", "stream-json", "--verbose"]
        if config.partial_messages:
            argv.append("--include-partial-messages")
        if request.allowed_commands:
            argv += ["--permission-mode", "acceptEdits", "--allowedTools"]
            argv += allowed_tool_rules(request.allowed_commands)
        else:
            argv.append("--dangerously-skip-permissions")
        model = request.model or config.model
        if model:
            argv += ["--model", model]
        if request.max_turns is not None:
            argv += ["--max-turns", str(request.max_turns)]
        appended = [t for t in (request.instructions, request.system_prompt_append) if t]
        if appended:
            argv += ["--append-system-prompt", "\n\n".join(appended)]
        if request.session_id:
            # `=` keeps an id that starts with "-" a value of --resume.
            argv.append(f"--resume={request.session_id}")
        argv += ["--", request.prompt]

        env = self._env(request, home)
        return CliInvocation(
            argv=tuple(argv),
            env=env,
            cwd=request.workdir or config.workdir,
            interrupt=config.interrupt,
            secrets=self._secrets(env, request),
        )

    def new_parser(self, request: AgentRequest) -> ClaudeStreamParser:
        return ClaudeStreamParser()

    def _env(self, request: AgentRequest, home: PurePosixPath) -> dict[str, str]:
        config = self._config
        env = {
            "HOME": str(home),
            "PATH": config.path,
            "LANG": "C.UTF-8",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            # Only lifts the CLI's refusal of bypassPermissions as root; harmless otherwise.
            "IS_SANDBOX": "1",
        }
        base_url = request.base_url or config.base_url
        if base_url:
            env["ANTHROPIC_BASE_URL"] = base_url
        if config.api_key:
            env["ANTHROPIC_API_KEY"] = config.api_key
        if config.max_retries is not None:
            env["CLAUDE_CODE_MAX_RETRIES"] = str(config.max_retries)
        env.update(config.extra_env)
        env.update(request.env)
        # The private HOME is structural (sessions, generated config): never overridden.
        env["HOME"] = str(home)
        return env

    @staticmethod
    def _secrets(env: Mapping[str, str], request: AgentRequest) -> tuple[str, ...]:
        names = {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"}
        names |= {name for name in request.env if _SECRET_NAME.search(name)}
        names |= {name for name in env if _SECRET_NAME.search(name)}
        return tuple(sorted({env[name] for name in names if env.get(name)}))
