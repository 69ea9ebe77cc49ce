"""Worker secrets without services: the container spec the manager makes, the worker's
redaction of events and log lines, the ``secrets`` settings group."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest
import structlog

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent, ScriptItem
from codeyard.adapters.memory.credential_store import InMemoryCredentialStore
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.secrets_file import FernetCredentialStore, generate_key
from codeyard.app.credentials import InvalidSecretsSettings, open_credential_store
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.launch import check_spec, worker_container_spec
from codeyard.app.manager.secrets import resolve_secrets, with_secrets
from codeyard.app.observability.logging import configure_logging, reset_logging
from codeyard.app.settings import Settings
from codeyard.app.worker_wrapper import WorkerWrapper
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import InvalidRequest, SecretNotFound
from codeyard.domain.events import (
    AgentEvent,
    MessagePayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.domain.secrets import SECRET_ENV_VAR, secret_env
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker import SecretRef, WorkerSpec
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD

pytestmark = pytest.mark.anyio

CANARY = "canary-0b1d2e3f4a5b6c7d"
CONFIG = ManagerConfig(owner="m1", worker_env={"CODEYARD_REDIS_URL": "redis://h:6379/0"})
SPEC = WorkerSpec(secrets=(SecretRef(name="canary", env="CANARY_VALUE"),), labels={"a": "b"})


# --- the manager side ----------------------------------------------------------------------


async def test_secrets_go_into_the_container_env_only() -> None:
    store = InMemoryCredentialStore({"canary": CANARY})
    made = worker_container_spec(
        SPEC, image="i", image_hash="h", slot="w-1", config=CONFIG, credentials=True
    )
    made = with_secrets(made, await resolve_secrets(store, SPEC))
    assert made.env == {
        "CODEYARD_REDIS_URL": "redis://h:6379/0",
        "CANARY_VALUE": CANARY,
        SECRET_ENV_VAR: "CANARY_VALUE",
    }
    assert CANARY not in json.dumps(made.labels)
    assert CANARY not in SPEC.model_dump_json()  # what the registry stores: names only


async def test_a_spec_with_secrets_needs_a_store_and_valid_variables() -> None:
    with pytest.raises(InvalidRequest, match="credential store"):
        check_spec(SPEC)
    check_spec(SPEC, credentials=True)
    for env in ("CODEYARD_REDIS_URL", "1BAD", "A=B", ""):
        bad = WorkerSpec(secrets=(SecretRef(name="x", env=env),))
        with pytest.raises(InvalidRequest):
            check_spec(bad, credentials=True)
    twice = WorkerSpec(secrets=(SecretRef(name="x", env="A"), SecretRef(name="y", env="A")))
    with pytest.raises(InvalidRequest, match="same variable"):
        check_spec(twice, credentials=True)
    with pytest.raises(SecretNotFound):
        await resolve_secrets(InMemoryCredentialStore(), SPEC)
    # A secret cannot replace a variable of the manager's worker env either.
    made = worker_container_spec(
        SPEC, image="i", image_hash="h", slot="w", config=CONFIG, credentials=True
    )
    with pytest.raises(InvalidRequest):
        with_secrets(made.model_copy(update={"env": {"CANARY_VALUE": "x"}}), {"CANARY_VALUE": "y"})


def test_the_worker_reads_the_secret_names_from_its_env() -> None:
    environ = {SECRET_ENV_VAR: "A, B,,C", "A": "va", "B": "vb", "OTHER": "x"}
    assert secret_env(environ) == {"A": "va", "B": "vb"}  # C is unset: left out
    assert secret_env({}) == {}


# --- the worker side -----------------------------------------------------------------------


async def test_the_wrapper_puts_secrets_in_the_request_and_redacts_every_event(
    tmp_path: Path,
) -> None:
    seen: list[AgentRequest] = []

    def script(request: AgentRequest) -> list[ScriptItem]:
        seen.append(request)
        value = request.env["CANARY_VALUE"]
        return [
            ToolUsePayload(tool_use_id="t1", name="Bash", input={"command": "echo $X"}),
            ToolResultPayload(tool_use_id="t1", output=f"value: {value}\n"),
            MessagePayload(text=f'quoted "{value}" and in a key', message_id=value),
            ResultPayload(
                result=AgentResult(status=ResultStatus.SUCCESS, provider="scripted", text=value)
            ),
        ]

    bus = InMemoryEventBus()
    wrapper = WorkerWrapper(
        "w1",
        bus,
        ScriptedCodeAgent(script),
        workdir=tmp_path,
        instructions=None,
        provider="scripted",
        clock=SystemClock(),
        poll_s=0.05,
        secret_env={"CANARY_VALUE": CANARY},
    )
    await bus.publish(
        worker_input_stream("w1"), {INPUT_FIELD: json.dumps({"prompt": "go", "request_id": "r"})}
    )
    await bus.publish(worker_input_stream("w1"), {INPUT_FIELD: json.dumps({"type": "stop"})})
    with anyio.fail_after(5):
        await wrapper.run()  # serves the prompt, then the stop
    entries = await bus.read(worker_output_stream("w1"), count=1000)
    raw = json.dumps([e.fields for e in entries])
    events = [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]
    assert seen[0].env["CANARY_VALUE"] == CANARY  # the agent got it
    assert CANARY not in raw
    outputs = [e.payload.output for e in events if isinstance(e.payload, ToolResultPayload)]
    assert outputs == ["value: [REDACTED]\n"]
    results = [e.payload.result for e in events if isinstance(e.payload, ResultPayload)]
    assert results[0].text == "[REDACTED]"


async def test_a_prompt_secret_reference_is_filled_in_for_the_agent_only(tmp_path: Path) -> None:
    seen: list[AgentRequest] = []

    def script(request: AgentRequest) -> list[ScriptItem]:
        seen.append(request)
        # A CLI that echoes its prompt: the echo is redacted like any other output.
        return [
            MessagePayload(text=f"you said: {request.prompt}"),
            ResultPayload(result=AgentResult(status=ResultStatus.SUCCESS, provider="scripted")),
        ]

    bus = InMemoryEventBus()
    inputs = [
        {"prompt": "use {{secret:CANARY_VALUE}} now", "request_id": "r1"},
        {"prompt": "and {{secret:NOT_GIVEN}}, {{secret:HOME}}", "request_id": "r2"},
        {"prompt": "still here?", "request_id": "r3"},
        {"type": "stop"},
    ]
    for message in inputs:
        await bus.publish(worker_input_stream("w1"), {INPUT_FIELD: json.dumps(message)})
    wrapper = WorkerWrapper(
        "w1",
        bus,
        ScriptedCodeAgent(script),
        workdir=tmp_path,
        instructions=None,
        provider="scripted",
        clock=SystemClock(),
        poll_s=0.05,
        base_env={"HOME": "/home/worker"},
        secret_env={"CANARY_VALUE": CANARY},
    )
    with anyio.fail_after(5):
        await wrapper.run()
    entries = await bus.read(worker_output_stream("w1"), count=1000)
    events = [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]
    # The agent got the value; the output carries neither it nor the filled-in prompt.
    assert [r.prompt for r in seen] == [f"use {CANARY} now", "still here?"]
    assert CANARY not in json.dumps([e.fields for e in entries])
    texts = [e.payload.text for e in events if isinstance(e.payload, MessagePayload)]
    assert texts[0] == "you said: use [REDACTED] now"
    # An unknown reference (or a variable that is not a secret) fails that run by name,
    # without running the agent, and the worker goes on.
    results = {e.run_id: e.payload.result for e in events if isinstance(e.payload, ResultPayload)}
    assert results["r1"].status is ResultStatus.SUCCESS
    assert results["r2"].status is ResultStatus.ERROR
    assert results["r2"].terminal_reason == "unknown_prompt_secret"
    assert "'NOT_GIVEN'" in (results["r2"].error or "")
    assert "'HOME'" in (results["r2"].error or "")
    assert results["r3"].status is ResultStatus.SUCCESS
    errors = [e for e in events if e.run_id == "r2" and e.payload.type == "error"]
    assert len(errors) == 1
    # Every handled entry is gone from the input stream.
    assert await bus.length(worker_input_stream("w1")) == 0


def test_worker_log_lines_redact_secret_values_under_any_key() -> None:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out, redact=[CANARY])
    try:
        log = structlog.get_logger("codeyard.test")
        log.info(f"saw {CANARY}", detail={"nested": [CANARY]}, plain=CANARY)
    finally:
        reset_logging()
    assert out.getvalue()
    assert CANARY not in out.getvalue()
    assert "[REDACTED]" in out.getvalue()


# --- settings ------------------------------------------------------------------------------


def test_settings_key_is_checked_without_echo_and_opens_the_file_store(tmp_path: Path) -> None:
    assert open_credential_store(Settings()) is None
    bad = "not-a-key-" + CANARY
    with pytest.raises(InvalidSecretsSettings) as caught:
        Settings(secrets={"key": bad})
    assert CANARY not in str(caught.value.to_dict())
    key = generate_key()
    settings = Settings(secrets={"key": f"{generate_key()},{key}", "path": tmp_path / "s"})
    store = open_credential_store(settings)
    assert isinstance(store, FernetCredentialStore)
    assert store.path == tmp_path / "s"
    assert key not in json.dumps(settings.masked())
