"""How to run OpenAI Codex CLI (``codex exec --json``) for one turn.

Everything Codex reads is generated per run into the private HOME (``$CODEX_HOME`` =
``~/.codex``), never taken from the user's own: ``config.toml`` declares one model provider
(``[model_providers.codeyard]`` with ``base_url``, ``env_key`` naming the environment
variable that holds the API key, ``wire_api = "responses"``), turns approvals off
(``approval_policy = "never"``) and the sandbox off (``danger-full-access``: the worker
container is the sandbox), and silences the update check, analytics and feedback.
``AGENTS.md`` in the same folder carries ``instructions``/``system_prompt_append`` (Codex
reads it as the user's global instructions).

Codex 0.169 also dials github.com, api.github.com and chatgpt.com at start-up: its plugin
marketplace (``git`` fetches, then the GitHub and ChatGPT APIs). ``[features] plugins =
false`` stops all three (checked by tests/integration/test_codex_cli.py through a recording
proxy). Offline they failed fast and in parallel with the model request anyway (first
model request ~0.3 s after start with or without them), so this is about not calling home
from a worker rather than speed. The update check, analytics and feedback are off too.

Interrupt: the default escalation. SIGINT makes Codex exit 1 at once without a final
event (the run loop then synthesizes the cancelled/timeout result); its tool processes go
with it (tests/integration/test_codex_cli.py counts them).

Resume is ``codex exec --json resume <thread_id> <prompt>`` with the SAME private HOME: the
thread's rollout lives under ``$CODEX_HOME/sessions``. Codex silently starts a new thread
when the id is unknown; the parser reports that as an error event (see ``CodexParser``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from codeyard.adapters.cli.types import DEFAULT_INTERRUPT, CliInvocation, InterruptStep
from codeyard.adapters.codex.parser import PROVIDER, CodexParser
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import InvalidRequest, UnsupportedProvider

#: The variable ``config.toml``'s ``env_key`` names; it carries the API key to Codex.
API_KEY_ENV = "CODEYARD_CODEX_API_KEY"
#: Where the API key is also taken from when the options carry none.
REQUEST_KEY_ENVS = ("CODEX_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROVIDER_ID = "codeyard"

#: Feature flags turned off: ``plugins`` syncs a plugin marketplace from GitHub and
#: ChatGPT at every start, network calls a headless worker has no use for.
DISABLED_FEATURES: tuple[str, ...] = ("plugins",)

CAPABILITIES = AgentCapabilities(
    resume=True, interrupt=True, streaming_deltas=False, reports_cost=False, max_turns=False
)

#: Variables the adapter owns: a request's ``env`` cannot override them.
_RESERVED_ENV = frozenset({"HOME", "CODEX_HOME", API_KEY_ENV})


@dataclass(frozen=True)
class CodexOptions:
    """Deployment settings; a request's ``model``/``base_url`` override the defaults here.

    ``base_url`` is the OpenAI-compatible API root INCLUDING ``/v1`` (Codex appends
    ``/responses``). ``max_retries`` sets Codex's request and stream retries (its default
    is several, with backoff; tests use 0 so a model error ends the run at once).
    ``workdir`` is the working directory of requests that name none (the worker's
    checkout).
    """

    binary: str = "codex"
    path: str = DEFAULT_PATH
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    max_retries: int | None = None
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    interrupt: tuple[InterruptStep, ...] = DEFAULT_INTERRUPT


def toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are a subset of TOML's, except that TOML also
    forbids a raw DEL character."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_config(
    *, base_url: str, model: str | None, max_retries: int | None, features: tuple[str, ...]
) -> str:
    """The ``config.toml`` of one run."""
    lines = []
    if model:
        lines.append(f"model = {toml_string(model)}")
    lines += [
        f"model_provider = {toml_string(PROVIDER_ID)}",
        'approval_policy = "never"',
        'sandbox_mode = "danger-full-access"',
        "check_for_update_on_startup = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[feedback]",
        "enabled = false",
        "",
    ]
    if features:
        lines += ["[features]", *(f"{toml_string(name)} = false" for name in features), ""]
    lines += [
        f"[model_providers.{PROVIDER_ID}]",
        'name = "codeyard"',
        f"base_url = {toml_string(base_url)}",
        f"env_key = {toml_string(API_KEY_ENV)}",
        'wire_api = "responses"',
    ]
    if max_retries is not None:
        lines += [f"request_max_retries = {max_retries}", f"stream_max_retries = {max_retries}"]
    return "\n".join(lines) + "\n"


def instructions_text(request: AgentRequest) -> str | None:
    parts = [p.strip() for p in (request.instructions, request.system_prompt_append) if p]
    parts = [p for p in parts if p]
    return "\n\n".join(parts) + "\n" if parts else None


class CodexSpec:
    """The :class:`~codeyard.adapters.cli.types.ProviderSpec` of Codex CLI."""

    def __init__(self, options: CodexOptions | None = None) -> None:
        self._options = options or CodexOptions()
        if self._options.max_retries is not None and self._options.max_retries < 0:
            raise InvalidRequest("max_retries must be >= 0", max_retries=self._options.max_retries)

    @property
    def name(self) -> str:
        return PROVIDER

    @property
    def options(self) -> CodexOptions:
        return self._options

    def capabilities(self) -> AgentCapabilities:
        return CAPABILITIES

    def check(self, request: AgentRequest) -> None:
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                f"the codex adapter cannot run a {request.provider!r} request",
                provider=request.provider,
            )
        if request.max_turns is not None:
            # Codex has no turn limit; ignoring the request's would hide a broken promise.
            raise InvalidRequest("codex cannot limit turns", max_turns=request.max_turns)
        if request.allowed_commands:
            raise InvalidRequest(
                "codex cannot restrict the commands the agent runs",
                allowed_commands=list(request.allowed_commands),
            )
        if not self._api_key(request):
            # Codex would start, then fail the turn ("Missing environment variable").
            raise InvalidRequest(
                "codex needs an API key: CodexOptions.api_key, or CODEX_API_KEY or "
                "OPENAI_API_KEY in the request's env"
            )

    def _api_key(self, request: AgentRequest) -> str:
        if self._options.api_key:
            return self._options.api_key
        for name in REQUEST_KEY_ENVS:
            if request.env.get(name):
                return request.env[name]
        return ""

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        opts = self._options
        model = request.model or opts.model
        api_key = self._api_key(request)
        codex_home = home / ".codex"
        files = {
            PurePosixPath(".codex/config.toml"): render_config(
                base_url=request.base_url or opts.base_url or DEFAULT_BASE_URL,
                model=model,
                max_retries=opts.max_retries,
                features=DISABLED_FEATURES,
            )
        }
        # Written even when empty: HOME persists between turns, so a stale file from an
        # earlier turn's instructions would otherwise still apply.
        files[PurePosixPath(".codex/AGENTS.md")] = instructions_text(request) or ""
        env = {
            "PATH": opts.path,
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            **opts.env,
            **{k: v for k, v in request.env.items() if k not in _RESERVED_ENV},
            "HOME": str(home),
            "CODEX_HOME": str(codex_home),
            API_KEY_ENV: api_key,
        }
        workdir = request.workdir or opts.workdir
        argv = [opts.binary, "exec", "--json", "--color", "never", "--skip-git-repo-check"]
        if workdir:
            argv += ["--cd", workdir]
        if request.session_id:
            argv += ["resume", request.session_id]
        # "--" ends the options: a prompt starting with "-" stays a prompt.
        argv += ["--", request.prompt]
        return CliInvocation(
            argv=tuple(argv),
            env=env,
            cwd=workdir,
            files=files,
            interrupt=opts.interrupt,
            secrets=(api_key,) if api_key else (),
        )

    def new_parser(self, request: AgentRequest) -> CodexParser:
        return CodexParser(
            model=request.model or self._options.model,
            cwd=request.workdir or self._options.workdir,
            resumed=request.session_id,
        )
