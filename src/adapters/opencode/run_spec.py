"""How to run one headless OpenCode turn as ``opencode run --format json`` (provider
``opencode-run``), through the shared run loop (:class:`~codeyard.adapters.cli.agent.CliCodeAgent`).

The ``opencode`` provider drives a long-lived ``opencode serve`` over HTTP; this one starts
a process per turn and reads its JSON lines (:mod:`.run_parser`), like the other CLIs.
Decisions (evidence: /work/shared/FACTS.md, agent-transcripts/opencode/run*):

* **Config.** The same generated ``opencode.json`` and base environment as the serve
  adapter (:func:`~codeyard.adapters.opencode.config.config_file`,
  :func:`~codeyard.adapters.opencode.config.base_env`): XDG dirs in the private HOME (the
  sessions live there, so resume needs the same HOME), the ``OPENCODE_DISABLE_*``
  switches (auto update, model list fetch, LSP download, share, project config), the API
  key only in the environment. ``request.env`` may override anything but ``HOME``.
* **Instructions.** ``run`` has no system-prompt option: ``instructions`` and
  ``system_prompt_append`` go to OpenCode's global rules file
  ``$XDG_CONFIG_HOME/opencode/AGENTS.md``, written every turn (empty when there are none,
  so an earlier turn's instructions never linger in the persistent HOME).
* **Argv.** ``opencode run --format json [--session=ID] -- PROMPT``: ``=`` and ``--`` keep a
  session id or prompt starting with ``-`` from reading as an option.
* **Interrupt.** ``opencode run`` ignores SIGINT once started (recorded: run3-sigint
  finished its turn), so the escalation is SIGTERM, then SIGKILL. Measured with 1.18.33:
  SIGTERM ends a turn at once, except the first turn in a fresh HOME, which ignored it for
  15 s and more (its background plugin install, presumably); SIGKILL ends that one.
* **Liveness.** ``run`` prints a text part only once it is complete and a tool call only
  once it ended (no deltas): a long answer or tool is silent meanwhile, so
  ``idle_timeout_s`` must allow for the longest of them.
* **Not supported.** ``allowed_commands`` (a per-turn shell policy would have to be
  rewritten into the shared config file; the serve adapter has per-session rules for it)
  -> ``InvalidRequest``. ``max_turns`` is not a capability (ignored, as by the serve
  adapter).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from codeyard.adapters.cli.types import CliInvocation, InterruptStep
from codeyard.adapters.opencode.config import (
    CONFIG_FILE,
    OpencodeConfig,
    base_env,
    config_file,
    env_secrets,
    model_ref,
)
from codeyard.adapters.opencode.run_parser import PROVIDER, OpencodeRunParser
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import InvalidInput, InvalidRequest, UnsupportedProvider

#: ``opencode run`` ignores SIGINT: TERM first, then KILL.
RUN_INTERRUPT: tuple[InterruptStep, ...] = (
    InterruptStep(signal.SIGTERM, 5.0),
    InterruptStep(signal.SIGKILL, 2.0),
)
#: OpenCode's global rules file, relative to HOME (``$XDG_CONFIG_HOME/opencode/AGENTS.md``).
RULES_FILE = PurePosixPath(".config/opencode/AGENTS.md")

CAPABILITIES = AgentCapabilities(
    resume=True, interrupt=True, streaming_deltas=False, reports_cost=True, max_turns=False
)


@dataclass(frozen=True)
class OpencodeRunOptions:
    """The serve adapter's :class:`OpencodeConfig` (binary, PATH, model endpoint, limits,
    ``extra_env``; its server settings do not apply), the working directory of requests
    that name none, and the interrupt escalation."""

    config: OpencodeConfig = field(default_factory=OpencodeConfig)
    workdir: str | None = None
    interrupt: tuple[InterruptStep, ...] = RUN_INTERRUPT


def instructions_text(request: AgentRequest) -> str:
    parts = [p.strip() for p in (request.instructions, request.system_prompt_append) if p]
    parts = [p for p in parts if p]
    return "\n\n".join(parts) + "\n" if parts else ""


class OpencodeRunSpec:
    """The :class:`~codeyard.adapters.cli.types.ProviderSpec` of ``opencode run``."""

    def __init__(self, options: OpencodeRunOptions | None = None) -> None:
        self._options = options or OpencodeRunOptions()

    @property
    def name(self) -> str:
        return PROVIDER

    @property
    def options(self) -> OpencodeRunOptions:
        return self._options

    def capabilities(self) -> AgentCapabilities:
        return CAPABILITIES

    def check(self, request: AgentRequest) -> None:
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                f"the opencode-run adapter cannot run a {request.provider!r} request",
                provider=request.provider,
            )
        if request.allowed_commands:
            raise InvalidRequest(
                "opencode-run cannot restrict the commands the agent runs (the opencode "
                "provider can)",
                allowed_commands=list(request.allowed_commands),
            )
        if request.session_id is not None and (
            not request.session_id.strip() or "\x00" in request.session_id
        ):
            raise InvalidInput("session_id must not be blank", session_id=request.session_id)

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        self.check(request)
        opts = self._options
        config = opts.config
        env, real_key = base_env(config, request, home=home)
        env["HOME"] = str(home)
        argv = [config.binary, "run", "--format", "json"]
        if request.session_id:
            argv.append(f"--session={request.session_id}")
        argv += ["--", request.prompt]
        return CliInvocation(
            argv=tuple(argv),
            env=env,
            cwd=request.workdir or opts.workdir,
            files={
                CONFIG_FILE: config_file(config, request) + "\n",
                RULES_FILE: instructions_text(request),
            },
            interrupt=opts.interrupt,
            secrets=env_secrets(env, real_key),
        )

    def new_parser(self, request: AgentRequest) -> OpencodeRunParser:
        return OpencodeRunParser(
            model=model_ref(self._options.config, request)[1],
            cwd=request.workdir or self._options.workdir,
        )
