"""How codeyard starts ``opencode serve`` for a worker: config file, environment, argv.

Decisions (evidence: /work/shared/FACTS.md "Agent CLIs", agent-transcripts/opencode):

* **Model.** With a ``base_url`` (the request's, else the config's) the generated
  ``opencode.json`` declares one provider ``codeyard`` using the bundled
  ``@ai-sdk/openai-compatible`` package (no download) with that ``baseURL`` — ``/v1`` is
  appended when the URL has no path, since the SDK appends ``/chat/completions`` — and the
  model ``request.model`` (else ``config.model``, else ``default``). Without a base URL,
  ``request.model`` is passed as OpenCode's own ``provider/model`` reference.
* **API key.** Never written to disk: the config says ``{env:CODEYARD_OPENCODE_API_KEY}``
  and the value travels in the server's environment (and is redacted from events).
* **Permissions.** Everything is allowed (the worker container is the sandbox) except the
  interactive tools (``question``, plan mode), which nobody could answer. A request's
  ``allowed_commands`` become per-session rules instead (see :func:`permission_rules`).
* **Environment.** Complete: ``HOME`` and the XDG dirs inside the worker's private home
  (sessions live in ``$XDG_DATA_HOME/opencode``: resume needs the same home), the
  ``OPENCODE_DISABLE_*`` switches for update checks, model list fetches, LSP downloads and
  sharing, ``OPENCODE_DISABLE_PROJECT_CONFIG`` (a repository's own ``opencode.json`` must
  not re-point the model or add plugins), basic-auth credentials, then ``extra_env`` and
  ``request.env`` (which may override anything but ``HOME`` and the auth password).
* **Process.** ``/bin/sh -c 'exec opencode serve ... >>LOG 2>&1'``: the server keeps
  running between turns while nobody reads its pipes, so its output goes to a log file in
  the home (``.local/state/codeyard/opencode-serve.log``) instead of a pipe that could
  fill and block it; ``exec`` keeps the server the leader of its process group.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from codeyard.adapters.cli.lines import DEFAULT_MAX_LINE_BYTES
from codeyard.domain.agent import AgentRequest

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROVIDER_ID = "codeyard"
API_KEY_ENV = "CODEYARD_OPENCODE_API_KEY"
USERNAME = "opencode"
CONFIG_FILE = PurePosixPath(".config/opencode/opencode.json")
LOG_FILE = PurePosixPath(".local/state/codeyard/opencode-serve.log")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
ALLOW_ALL_COMMANDS = {"permission": "bash", "pattern": "*", "action": "allow"}
_QUIET_SWITCHES = (
    "OPENCODE_DISABLE_AUTOUPDATE",
    "OPENCODE_DISABLE_MODELS_FETCH",
    "OPENCODE_DISABLE_LSP_DOWNLOAD",
    "OPENCODE_DISABLE_SHARE",
    "OPENCODE_DISABLE_PROJECT_CONFIG",
)


@dataclass(frozen=True)
class OpencodeConfig:
    """Where the CLI is, how to reach its server, and the adapter's time limits.

    ``binary`` and ``path`` are as seen where the server runs (host or container).
    ``listen_host`` is what the server binds; ``connect_host`` where codeyard reaches it
    (a container's address when the launcher execs into a worker: then listen on
    ``0.0.0.0`` and give ``port``; basic auth guards it). ``port=None`` picks a free local
    port (right for the local launcher); ``connect_port`` defaults to ``port``.
    """

    binary: str = "opencode"
    path: str = DEFAULT_PATH
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    context_limit: int = 200_000
    output_limit: int = 8192
    listen_host: str = "127.0.0.1"
    connect_host: str | None = None
    port: int | None = None
    #: Where codeyard connects when it differs from ``port`` (a published or relayed port).
    connect_port: int | None = None
    #: Keep the server between turns (the point of a per-worker server: no start-up cost,
    #: sessions stay hot). ``False`` stops it whenever no run is going on, for one-shot use.
    keep_server: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Server start-up: overall limit, and the per-request limit of each health poll
    #: (FACTS: a request sent while the server starts can hang forever).
    start_timeout_s: float = 60.0
    health_timeout_s: float = 1.0
    start_attempts: int = 3
    #: Every other HTTP call (create session, prompt, abort...).
    request_timeout_s: float = 30.0
    #: After an abort: how long the session may take to go idle before the server is
    #: killed; also the bound of the shielded clean-up on consumer cancellation.
    stop_grace_s: float = 5.0
    #: Upper bound of stopping the server (``aclose``), shielded.
    close_deadline_s: float = 10.0
    #: Event stream: re-subscriptions allowed per turn after it drops, and the cap of one
    #: SSE line (one event: OpenCode sends each as a single ``data:`` line).
    max_reconnects: int = 5
    max_event_bytes: int = DEFAULT_MAX_LINE_BYTES


@dataclass(frozen=True)
class ServerSetup:
    """Everything a server start needs; ``fingerprint`` tells when a running server no
    longer matches a request (other model, endpoint or environment) and must restart."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    files: Mapping[PurePosixPath, str]
    secrets: tuple[str, ...]
    fingerprint: str
    model: str | None


def _v1(url: str) -> str:
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1")
    return urlunsplit(parts)


def model_ref(config: OpencodeConfig, request: AgentRequest) -> tuple[str | None, str | None]:
    """``(base_url, "provider/model")`` of a request under ``config``."""
    base_url = request.base_url or config.base_url
    model = request.model or config.model
    if base_url is None:
        return None, model
    return _v1(base_url), f"{PROVIDER_ID}/{model or 'default'}"


def config_document(config: OpencodeConfig, request: AgentRequest) -> dict[str, Any]:
    base_url, model = model_ref(config, request)
    doc: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "permission": {
            "*": "allow",
            "question": "deny",
            "plan_enter": "deny",
            "plan_exit": "deny",
        },
    }
    if model is not None:
        doc["model"] = doc["small_model"] = model
    if base_url is not None and model is not None:
        model_id = model.split("/", 1)[1]
        doc["provider"] = {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "codeyard",
                "options": {"baseURL": base_url, "apiKey": f"{{env:{API_KEY_ENV}}}"},
                "models": {
                    model_id: {
                        "name": model_id,
                        "tool_call": True,
                        "limit": {"context": config.context_limit, "output": config.output_limit},
                    }
                },
            }
        }
    return doc


def config_file(config: OpencodeConfig, request: AgentRequest) -> str:
    """The generated ``opencode.json`` of ``request`` (see :data:`CONFIG_FILE`)."""
    return json.dumps(config_document(config, request), indent=2, sort_keys=True)


def base_env(
    config: OpencodeConfig, request: AgentRequest, *, home: PurePosixPath
) -> tuple[dict[str, str], str | None]:
    """The environment every ``opencode`` process of ``request`` gets (``serve`` adds its
    credentials and log file to it), and the real API key if there is one."""
    real_key = request.env.get("OPENAI_API_KEY") or config.api_key
    # The openai-compatible SDK wants some key; a local model server ignores it.
    api_key = real_key or "codeyard-local"
    env: dict[str, str] = {
        "PATH": config.path,
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **dict.fromkeys(_QUIET_SWITCHES, "1"),
        API_KEY_ENV: api_key,
        **config.extra_env,
        **request.env,
    }
    return env, real_key


def env_secrets(env: Mapping[str, str], *known: str | None) -> tuple[str, ...]:
    """The values to redact: ``known`` ones, then every ``env`` value whose name looks like
    a credential (but the placeholder key of a local model server)."""
    found = [v for k, v in env.items() if k != API_KEY_ENV and _SECRET_NAME.search(k)]
    return tuple(dict.fromkeys(v for v in (*known, *found) if v))


def server_setup(
    config: OpencodeConfig, request: AgentRequest, *, home: PurePosixPath, port: int
) -> ServerSetup:
    """argv, env and files of a server for ``request``; a fresh password every call."""
    document = config_file(config, request)
    env, real_key = base_env(config, request, home=home)
    fingerprint = hashlib.sha256(
        json.dumps([document, sorted(env.items()), config.binary]).encode()
    ).hexdigest()
    password = secrets.token_urlsafe(24)
    env.update(
        HOME=str(home),
        OPENCODE_SERVER_USERNAME=USERNAME,
        OPENCODE_SERVER_PASSWORD=password,
        CODEYARD_SERVE_LOG=str(home / LOG_FILE),
    )
    argv = (
        "/bin/sh",
        "-c",
        'exec "$0" "$@" >>"$CODEYARD_SERVE_LOG" 2>&1',
        config.binary,
        "serve",
        "--hostname",
        config.listen_host,
        "--port",
        str(port),
    )
    return ServerSetup(
        argv=argv,
        env=env,
        files={CONFIG_FILE: document + "\n"},
        secrets=env_secrets(env, password, real_key),
        fingerprint=fingerprint,
        model=model_ref(config, request)[1],
    )


def permission_update(current: Any, commands: tuple[str, ...]) -> list[dict[str, str]] | None:
    """The rules to add to a session so that ``commands`` (empty: all commands) is its
    shell policy this turn, or ``None`` when it already is.

    OpenCode APPENDS what ``PATCH /session/{id}`` sends to the session's rules (measured:
    an empty list changes nothing) and the last matching rule wins, so a policy is
    changed by appending one that overrides the earlier rules; appending only when the
    policy changes keeps the list short.
    """
    rules = [r for r in current if isinstance(r, dict)] if isinstance(current, list) else []
    wanted = permission_rules(commands) if commands else [ALLOW_ALL_COMMANDS]
    if not commands and not any(r.get("permission") == "bash" for r in rules):
        return None
    return None if rules[-len(wanted) :] == wanted else wanted


def permission_rules(commands: tuple[str, ...]) -> list[dict[str, str]]:
    """``allowed_commands`` as OpenCode session rules: every shell command denied except
    the listed ones, with or without arguments (the last matching rule wins). Denied, not
    "ask": nobody could answer, and the model gets the refusal as a tool error."""
    rules = [{"permission": "bash", "pattern": "*", "action": "deny"}]
    for command in commands:
        name = command.strip()
        rules.append({"permission": "bash", "pattern": name, "action": "allow"})
        rules.append({"permission": "bash", "pattern": f"{name} *", "action": "allow"})
    return rules


def prompt_body(request: AgentRequest, model: str | None, prompt_id: str) -> dict[str, Any]:
    """The ``prompt_async`` body: our own message id (so the turn's events can be told from
    older ones), the prompt, the model, and the instructions as the system prompt."""
    body: dict[str, Any] = {
        "messageID": prompt_id,
        "parts": [{"type": "text", "text": request.prompt}],
    }
    if model and "/" in model:
        provider_id, model_id = model.split("/", 1)
        body["model"] = {"providerID": provider_id, "modelID": model_id}
    system = "\n\n".join(t for t in (request.instructions, request.system_prompt_append) if t)
    if system:
        body["system"] = system
    return body
