"""How codeyard runs Factory Droid for one turn: argv, environment, settings, interrupt.

One turn is ``droid exec --output-format stream-json ... -- <prompt>`` (lines parsed by
:mod:`codeyard.adapters.droid.parser`). Decisions, with the evidence in /work/shared/FACTS.md,
agent-transcripts/droid and runs of the pinned droid 0.215.0:

* **Model (BYOK).** A custom model in the private HOME's ``.factory/settings.json`` (see
  :mod:`.settings`), selected with ``--model custom:codeyard-0``; any of the three wire
  APIs. Without a ``base_url`` the turn uses Factory's hosted models, which needs
  ``FACTORY_API_KEY`` and is refused in air-gapped mode.
* **Air-gapped (the default).** ``FACTORY_AIRGAP_ENABLED=true`` stops every call to
  Factory's servers (without it Droid dials api.factory.ai and telemetry on each run). Resume
  (``exec --session-id``) loads the session from Factory's server, so offline it exits 1
  without a line: :meth:`DroidSpec.check` raises ``ResumeUnsupported`` before anything
  starts, and ``capabilities().resume`` is False.
* **Permissions.** No ``allowed_commands``: ``--skip-permissions-unsafe`` (the worker
  container is the sandbox; ``--auto high`` still blocks some commands and makes the model
  classify each command's risk). With ``allowed_commands``: ``--auto low`` plus a
  ``commandAllowlist``; a listed command runs whatever its risk, any other command above
  "low" ends the turn ("insufficient permission"), which the parser reports as an error
  result.
* **Instructions.** ``request.instructions`` go to ``~/.factory/AGENTS.md`` (Droid's
  "personal global instructions"; a project ``AGENTS.md`` in the workdir still takes
  precedence); it is rewritten, empty if need be, every turn so none outlive their turn.
  ``system_prompt_append`` goes to ``--append-system-prompt``.
* **Interrupt.** None before the kill: SIGINT and SIGTERM during a tool only kill the tool,
  then Droid asks the model again and carries on (transcripts run3/run5, reproduced), so a
  polite signal would buy one more model call, maybe one more tool. The run loop's final
  kill is the stop: the launcher SIGKILLs Droid's group AND the descendants of its members,
  found while Droid still lives. That matters: Droid starts each shell tool in a session of
  its own, which a group signal does not reach; once Droid is dead the tool is re-parented
  and only Droid's supervisor script kills it, up to 2 s later (its poll period).
* **Model errors.** Droid retries 429/5xx/529 itself, for minutes (10 attempts, backoff
  up to ~30 s, printing nothing meanwhile): the run loop's idle timeout bounds that. A
  non-retryable error (400, 401...) ends the turn at once with ``error`` lines and no
  ``completion``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from codeyard.adapters.cli.types import CliInvocation, InterruptStep
from codeyard.adapters.droid.parser import PROVIDER, DroidStreamParser
from codeyard.adapters.droid.settings import (
    API_KEY_ENV,
    CUSTOM_MODEL_ID,
    DEFAULT_MAX_OUTPUT_TOKENS,
    DroidWireApi,
    render_settings,
)
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import InvalidRequest, ResumeUnsupported, UnsupportedProvider

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: No polite step (see the module docstring): the run loop's final kill comes at once.
DROID_INTERRUPT: tuple[InterruptStep, ...] = ()

#: Where a request's ``env`` may carry the custom model's key, per wire API.
REQUEST_KEY_ENVS: Mapping[DroidWireApi, str] = {
    DroidWireApi.ANTHROPIC: "ANTHROPIC_API_KEY",
    DroidWireApi.CHAT_COMPLETIONS: "OPENAI_API_KEY",
    DroidWireApi.RESPONSES: "OPENAI_API_KEY",
}
FACTORY_KEY_ENV = "FACTORY_API_KEY"

#: Env names whose values are credentials (redacted from every event and log line).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
#: Variables the adapter owns: a request's ``env`` cannot override them.
_RESERVED_ENV = frozenset({"HOME", API_KEY_ENV, "FACTORY_AIRGAP_ENABLED"})
_SETTINGS = PurePosixPath(".factory/settings.json")
_AGENTS_MD = PurePosixPath(".factory/AGENTS.md")


@dataclass(frozen=True)
class DroidOptions:
    """Deployment settings; a request's ``model``/``base_url`` override the defaults here.

    ``binary``, ``path`` and ``workdir`` are as seen where the process runs (host or
    container). ``model`` is the model name sent to the API (the custom model's ``model``),
    or, without ``base_url``, a Factory model id. ``api_key`` falls back to the request's
    ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` (by ``wire_api``).
    """

    binary: str = "droid"
    path: str = DEFAULT_PATH
    airgapped: bool = True
    wire_api: DroidWireApi = DroidWireApi.ANTHROPIC
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    factory_api_key: str | None = field(default=None, repr=False)
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    interrupt: tuple[InterruptStep, ...] = DROID_INTERRUPT


def _instructions(request: AgentRequest) -> str:
    text = (request.instructions or "").strip()
    return text + "\n" if text else ""


def _bad_text(value: str) -> bool:
    return not value.strip() or any(c in value for c in "\n\r\x00")


class DroidSpec:
    """The :class:`~codeyard.adapters.cli.types.ProviderSpec` of Factory Droid."""

    def __init__(self, options: DroidOptions | None = None) -> None:
        self._options = options or DroidOptions()
        if self._options.max_output_tokens < 1:
            raise InvalidRequest(
                "max_output_tokens must be >= 1", max_output_tokens=self._options.max_output_tokens
            )

    @property
    def name(self) -> str:
        return PROVIDER

    @property
    def options(self) -> DroidOptions:
        return self._options

    def capabilities(self) -> AgentCapabilities:
        return AgentCapabilities(
            resume=not self._options.airgapped,
            interrupt=True,
            streaming_deltas=False,
            # ``factory_credits`` are not dollars; BYOK usage is not priced by Droid.
            reports_cost=False,
            max_turns=False,
        )

    def check(self, request: AgentRequest) -> None:
        opts = self._options
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                f"the droid adapter cannot run a {request.provider!r} request",
                provider=request.provider,
            )
        if request.session_id is not None:
            if opts.airgapped:
                raise ResumeUnsupported(
                    "droid resumes sessions through Factory's server, which an air-gapped "
                    "run cannot reach",
                    session_id=request.session_id,
                )
            if _bad_text(request.session_id):
                raise InvalidRequest("session_id must not be blank", session_id=request.session_id)
        if request.max_turns is not None:
            # Droid has no turn limit; ignoring the request's would hide a broken promise.
            raise InvalidRequest("droid cannot limit turns", max_turns=request.max_turns)
        for command in request.allowed_commands:
            if _bad_text(command):
                raise InvalidRequest(
                    "allowed_commands entries must be non-empty single lines", command=command
                )
        if self._base_url(request) is None:
            if opts.airgapped:
                raise InvalidRequest(
                    "air-gapped droid needs a custom model: set base_url (and model, api key)"
                )
            if not self._factory_key(request):
                raise InvalidRequest(
                    "droid without a custom model needs FACTORY_API_KEY (options or env)"
                )
            return
        if not self._model(request):
            raise InvalidRequest("droid's custom model needs a model name (options or request)")
        if not self._api_key(request):
            raise InvalidRequest(
                "droid's custom model needs an API key: DroidOptions.api_key or "
                f"{REQUEST_KEY_ENVS[opts.wire_api]} in the request's env"
            )

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        self.check(request)
        opts = self._options
        base_url = self._base_url(request)
        argv = [opts.binary, "exec", "--output-format", "stream-json"]
        if request.allowed_commands:
            argv += ["--auto", "low"]
        else:
            argv.append("--skip-permissions-unsafe")
        if base_url is not None:
            argv += ["--model", CUSTOM_MODEL_ID]
        elif self._model(request):
            argv += ["--model", self._model(request) or ""]
        if request.system_prompt_append:
            argv += ["--append-system-prompt", request.system_prompt_append]
        if request.session_id:
            # ``=`` keeps an id starting with "-" the option's value.
            argv.append(f"--session-id={request.session_id}")
        # After ``--`` a prompt starting with "-" is never read as an option.
        argv += ["--", request.prompt]

        files = {
            _SETTINGS: render_settings(
                wire_api=opts.wire_api,
                base_url=base_url,
                model=self._model(request),
                max_output_tokens=opts.max_output_tokens,
                allowed_commands=request.allowed_commands,
                cloud_sync=not opts.airgapped,
            ),
            _AGENTS_MD: _instructions(request),
        }
        env = self._env(request, home, with_custom_model=base_url is not None)
        secrets = {env.get(API_KEY_ENV, ""), env.get(FACTORY_KEY_ENV, "")}
        secrets |= {v for k, v in request.env.items() if _SECRET_NAME.search(k)}
        secrets |= {v for k, v in opts.env.items() if _SECRET_NAME.search(k)}
        return CliInvocation(
            argv=tuple(argv),
            env=env,
            cwd=request.workdir or opts.workdir,
            files=files,
            interrupt=opts.interrupt,
            secrets=tuple(sorted(s for s in secrets if s)),
        )

    def new_parser(self, request: AgentRequest) -> DroidStreamParser:
        return DroidStreamParser()

    # --- request + options ----------------------------------------------------------------

    def _base_url(self, request: AgentRequest) -> str | None:
        return request.base_url or self._options.base_url

    def _model(self, request: AgentRequest) -> str | None:
        return request.model or self._options.model

    def _api_key(self, request: AgentRequest) -> str:
        return self._options.api_key or request.env.get(
            REQUEST_KEY_ENVS[self._options.wire_api], ""
        )

    def _factory_key(self, request: AgentRequest) -> str:
        return self._options.factory_api_key or request.env.get(FACTORY_KEY_ENV, "")

    def _env(
        self, request: AgentRequest, home: PurePosixPath, *, with_custom_model: bool
    ) -> dict[str, str]:
        opts = self._options
        env = {
            "PATH": opts.path,
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            # No self-update of a pinned binary, no OS keyring (absent in containers).
            "FACTORY_DROID_AUTO_UPDATE_ENABLED": "false",
            "FACTORY_DISABLE_KEYRING": "1",
            **opts.env,
            **{k: v for k, v in request.env.items() if k not in _RESERVED_ENV},
            "HOME": str(home),
        }
        if opts.airgapped:
            env["FACTORY_AIRGAP_ENABLED"] = "true"
        if with_custom_model:
            env[API_KEY_ENV] = self._api_key(request)
        factory_key = self._factory_key(request)
        if factory_key and not opts.airgapped:
            env[FACTORY_KEY_ENV] = factory_key
        else:
            # An air-gapped run never talks to Factory: its key has nothing to do there.
            env.pop(FACTORY_KEY_ENV, None)
        return env
