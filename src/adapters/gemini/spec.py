"""How to run Gemini CLI (``gemini --output-format stream-json --yolo``) for one turn.

Generated per run into the private HOME: ``~/.gemini/settings.json`` selects API-key auth
(``security.auth.selectedType = "gemini-api-key"``, the key itself comes from
``GEMINI_API_KEY``), turns off folder trust prompts, usage statistics, telemetry and auto
update, and carries the model and ``maxSessionTurns``; ``~/.gemini/GEMINI.md`` (Gemini's
global context file) carries ``instructions``/``system_prompt_append``.

``GEMINI_CLI_NO_RELAUNCH=true`` is required: by default the CLI relaunches itself in a
child node process and the parent ignores SIGINT/SIGTERM, so an interrupt never reaches the
process doing the work. ``GOOGLE_GEMINI_BASE_URL`` points it at another API root (the
root, without ``/v1beta``).

A failed turn prints a ``result`` with status ``error`` and then exits with the model
API's HTTP status truncated to a byte (400 -> 144, 500 -> 244, 429 -> 173); an unknown
``--resume`` id exits 42 with the reason on stderr and no stream at all (the run loop
synthesizes an error result carrying that stderr).

Sessions live under ``~/.gemini/tmp/<hash of the project folder>/chats``: ``--resume ID``
needs the same private HOME and the same working directory as the turn that made ID.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from codeyard.adapters.cli.types import DEFAULT_INTERRUPT, CliInvocation, InterruptStep
from codeyard.adapters.gemini.parser import PROVIDER, GeminiParser
from codeyard.adapters.gemini.supervise import MARKER_ENV, new_marker, supervised
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import InvalidRequest, UnsupportedProvider

API_KEY_ENV = "GEMINI_API_KEY"
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
TMPDIR_REL = PurePosixPath(".gemini/codeyard-tmp")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CAPABILITIES = AgentCapabilities(
    resume=True, interrupt=True, streaming_deltas=True, reports_cost=False, max_turns=True
)

#: Variables the adapter owns: a request's ``env`` cannot override them.
_RESERVED_ENV = frozenset({"HOME", API_KEY_ENV, BASE_URL_ENV, "GEMINI_CLI_NO_RELAUNCH", MARKER_ENV})


@dataclass(frozen=True)
class GeminiOptions:
    """Deployment settings; a request's ``model``/``base_url`` override the defaults here.

    ``base_url`` is the API root WITHOUT ``/v1beta`` (the CLI appends
    ``/v1beta/models/<model>:streamGenerateContent``); ``None`` keeps Google's.
    ``max_attempts`` caps the CLI's attempts per model request (``general.maxAttempts``,
    at most 10, its default; it backs off between them, so a failing 5xx model takes
    minutes to give up); tests use 1. ``workdir`` is the working directory of requests
    that name none (the worker's checkout). ``supervise`` runs the CLI under the
    :mod:`~codeyard.adapters.gemini.supervise` shell (``shell``), which kills the tool
    processes Gemini detaches from its process group.
    """

    binary: str = "gemini"
    path: str = DEFAULT_PATH
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    max_attempts: int | None = None
    workdir: str | None = None
    supervise: bool = True
    shell: str = "/bin/sh"
    env: Mapping[str, str] = field(default_factory=dict)
    interrupt: tuple[InterruptStep, ...] = DEFAULT_INTERRUPT


def render_settings(
    *, model: str | None, max_turns: int | None, max_attempts: int | None = None
) -> str:
    """The ``settings.json`` of one run."""
    model_settings: dict[str, Any] = {}
    if model:
        model_settings["name"] = model
    if max_turns is not None:
        model_settings["maxSessionTurns"] = max_turns
    settings: dict[str, Any] = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    }
    if model_settings:
        settings["model"] = model_settings
    if max_attempts is not None:
        settings["general"]["maxAttempts"] = max_attempts
    return json.dumps(settings, indent=2) + "\n"


def instructions_text(request: AgentRequest) -> str | None:
    parts = [p.strip() for p in (request.instructions, request.system_prompt_append) if p]
    parts = [p for p in parts if p]
    return "\n\n".join(parts) + "\n" if parts else None


class GeminiSpec:
    """The :class:`~codeyard.adapters.cli.types.ProviderSpec` of Gemini CLI."""

    def __init__(self, options: GeminiOptions | None = None) -> None:
        self._options = options or GeminiOptions()
        attempts = self._options.max_attempts
        if attempts is not None and not 1 <= attempts <= 10:
            raise InvalidRequest("max_attempts must be in [1, 10]", max_attempts=attempts)

    @property
    def name(self) -> str:
        return PROVIDER

    @property
    def options(self) -> GeminiOptions:
        return self._options

    def capabilities(self) -> AgentCapabilities:
        return CAPABILITIES

    def check(self, request: AgentRequest) -> None:
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                f"the gemini adapter cannot run a {request.provider!r} request",
                provider=request.provider,
            )
        if request.allowed_commands:
            raise InvalidRequest(
                "gemini cannot restrict the commands the agent runs",
                allowed_commands=list(request.allowed_commands),
            )
        if not self._api_key(request):
            raise InvalidRequest(
                "gemini needs an API key: GeminiOptions.api_key or GEMINI_API_KEY in the "
                "request's env"
            )

    def _api_key(self, request: AgentRequest) -> str:
        return self._options.api_key or request.env.get(API_KEY_ENV) or ""

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        opts = self._options
        api_key = self._api_key(request)
        files = {
            PurePosixPath(".gemini/settings.json"): render_settings(
                model=request.model or opts.model,
                max_turns=request.max_turns,
                max_attempts=opts.max_attempts,
            )
        }
        # Written even when empty: HOME persists between turns, so a stale file from an
        # earlier turn's instructions would otherwise still apply.
        files[PurePosixPath(".gemini/GEMINI.md")] = instructions_text(request) or ""
        # The CLI's temporary files (error reports with the conversation in them, shell
        # tool state) go to TMPDIR: keep them in the private HOME, not a shared /tmp. The
        # note only makes the run loop create the folder.
        files[TMPDIR_REL / "README"] = "Gemini CLI temporary files of codeyard runs.\n"
        env = {
            "PATH": opts.path,
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            **opts.env,
            **{k: v for k, v in request.env.items() if k not in _RESERVED_ENV},
            "HOME": str(home),
            "TMPDIR": str(home / TMPDIR_REL),
            "GEMINI_CLI_NO_RELAUNCH": "true",
            API_KEY_ENV: api_key,
        }
        base_url = request.base_url or opts.base_url
        if base_url:
            env[BASE_URL_ENV] = base_url
        # "--opt=value" keeps a prompt or id that starts with "-" from reading as an option.
        argv = [opts.binary, "--output-format=stream-json", "--yolo", f"--prompt={request.prompt}"]
        if request.session_id:
            argv.append(f"--resume={request.session_id}")
        if opts.supervise:
            env[MARKER_ENV] = new_marker()
        return CliInvocation(
            argv=supervised(argv, shell=opts.shell) if opts.supervise else tuple(argv),
            env=env,
            cwd=request.workdir or opts.workdir,
            files=files,
            interrupt=opts.interrupt,
            secrets=(api_key,) if api_key else (),
        )

    def new_parser(self, request: AgentRequest) -> GeminiParser:
        return GeminiParser(
            model=request.model or self._options.model,
            cwd=request.workdir or self._options.workdir,
        )
