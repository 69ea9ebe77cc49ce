"""DroidSpec: the argv, environment, generated settings and checks of one ``droid exec``
turn (the real binary runs in tests/integration/test_droid_cli.py)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeyard.adapters.droid import (
    CUSTOM_MODEL_ID,
    DROID_INTERRUPT,
    DroidOptions,
    DroidSpec,
    DroidStreamParser,
    DroidWireApi,
)
from codeyard.adapters.droid.settings import API_KEY_ENV, render_settings
from codeyard.domain.agent import AgentRequest
from codeyard.domain.errors import InvalidRequest, ResumeUnsupported, UnsupportedProvider

HOME = PurePosixPath("/home/worker")
KEY = "sk-droid-unit-5b2e"
SETTINGS = PurePosixPath(".factory/settings.json")
AGENTS_MD = PurePosixPath(".factory/AGENTS.md")


def byok(**fields: Any) -> DroidSpec:
    base: dict[str, Any] = {
        "binary": "/opt/droid",
        "base_url": "http://127.0.0.1:8787",
        "api_key": KEY,
        "model": "mock-model",
    }
    return DroidSpec(DroidOptions(**{**base, **fields}))


def request(prompt: str = "create hello.txt", **fields: Any) -> AgentRequest:
    return AgentRequest(provider="droid", prompt=prompt, **fields)


def settings_of(spec: DroidSpec, req: AgentRequest) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(spec.invocation(req, home=HOME).files[SETTINGS])
    return parsed


def test_a_byok_turn_is_an_air_gapped_exec_with_a_custom_model() -> None:
    spec = byok(workdir="/workspace")
    inv = spec.invocation(request("-starts with a dash"), home=HOME)
    assert inv.argv == (
        "/opt/droid",
        "exec",
        "--output-format",
        "stream-json",
        "--skip-permissions-unsafe",
        "--model",
        CUSTOM_MODEL_ID,
        "--",
        "-starts with a dash",
    )
    assert CUSTOM_MODEL_ID == "custom:codeyard-0"
    assert inv.cwd == "/workspace"
    assert inv.env["HOME"] == str(HOME)
    assert inv.env["FACTORY_AIRGAP_ENABLED"] == "true"
    assert inv.env[API_KEY_ENV] == KEY
    assert "FACTORY_API_KEY" not in inv.env
    assert inv.secrets == (KEY,)
    assert inv.interrupt == DROID_INTERRUPT == (), "no polite step: Droid ignores it mid-tool"
    [model] = settings_of(spec, request())["customModels"]
    assert model == {
        "model": "mock-model",
        "displayName": "codeyard",
        "baseUrl": "http://127.0.0.1:8787",
        "apiKey": "${" + API_KEY_ENV + "}",
        "provider": "anthropic",
        "maxOutputTokens": 8192,
    }
    assert KEY not in inv.files[SETTINGS], "the key stays in the environment, off the disk"
    assert inv.files[AGENTS_MD] == ""
    assert isinstance(spec.new_parser(request()), DroidStreamParser)


@pytest.mark.parametrize(
    ("wire", "provider", "key_env"),
    [
        (DroidWireApi.ANTHROPIC, "anthropic", "ANTHROPIC_API_KEY"),
        (DroidWireApi.CHAT_COMPLETIONS, "generic-chat-completion-api", "OPENAI_API_KEY"),
        (DroidWireApi.RESPONSES, "openai", "OPENAI_API_KEY"),
    ],
)
def test_each_wire_api_and_where_its_key_may_come_from(
    wire: DroidWireApi, provider: str, key_env: str
) -> None:
    spec = byok(wire_api=wire, api_key=None, base_url=None, model=None)
    req = request(base_url="http://h:1/v1", model="m-2", env={key_env: "sk-from-request"})
    [model] = settings_of(spec, req)["customModels"]
    assert (model["provider"], model["baseUrl"], model["model"]) == (
        provider,
        "http://h:1/v1",
        "m-2",
    )
    inv = spec.invocation(req, home=HOME)
    assert inv.env[API_KEY_ENV] == "sk-from-request"
    assert "sk-from-request" in inv.secrets


def test_request_values_override_the_options_but_not_what_the_adapter_owns() -> None:
    spec = byok(env={"GIT_AUTHOR_NAME": "codeyard", "TEAM_TOKEN": "t-opt"})
    req = request(
        model="other-model",
        env={
            "HOME": "/elsewhere",
            API_KEY_ENV: "hijack",
            "FACTORY_AIRGAP_ENABLED": "false",
            "FACTORY_API_KEY": "fk-not-offline",
            "GITHUB_TOKEN": "ghp-x",
            "PATH": "/custom/bin",
        },
    )
    inv = spec.invocation(req, home=HOME)
    assert inv.env["HOME"] == str(HOME)
    assert inv.env[API_KEY_ENV] == KEY
    assert inv.env["FACTORY_AIRGAP_ENABLED"] == "true"
    assert "FACTORY_API_KEY" not in inv.env
    assert inv.env["PATH"] == "/custom/bin"
    assert inv.env["GIT_AUTHOR_NAME"] == "codeyard"
    assert {"ghp-x", "t-opt", KEY} <= set(inv.secrets)
    assert settings_of(spec, req)["customModels"][0]["model"] == "other-model"


def test_instructions_prompt_append_and_allowed_commands() -> None:
    spec = byok()
    req = request(
        instructions="  Answer in French.  ",
        system_prompt_append="Be brief.",
        allowed_commands=("pytest", "git status"),
    )
    inv = spec.invocation(req, home=HOME)
    argv = list(inv.argv)
    assert argv[argv.index("--auto") + 1] == "low"
    assert "--skip-permissions-unsafe" not in argv
    assert argv[argv.index("--append-system-prompt") + 1] == "Be brief."
    assert inv.files[AGENTS_MD] == "Answer in French.\n"
    assert settings_of(spec, req)["commandAllowlist"] == ["pytest", "git status"]
    assert settings_of(spec, request())["cloudSessionSync"] is False


def test_resume_is_refused_offline_before_anything_starts() -> None:
    spec = byok()
    assert not spec.capabilities().resume
    with pytest.raises(ResumeUnsupported):
        spec.check(request(session_id="829cbc3f-143c-48ca-8d01-25c92369b646"))
    with pytest.raises(ResumeUnsupported):
        spec.invocation(request(session_id="abc"), home=HOME)


def test_online_droid_resumes_and_may_use_factory_models() -> None:
    online = DroidSpec(DroidOptions(airgapped=False, factory_api_key="fk-online"))
    assert online.capabilities().resume
    inv = online.invocation(request(session_id="-odd-id", model="claude-sonnet-4-6"), home=HOME)
    assert inv.argv[-3:] == ("--session-id=-odd-id", "--", "create hello.txt")
    assert inv.argv[inv.argv.index("--model") + 1] == "claude-sonnet-4-6"
    assert "FACTORY_AIRGAP_ENABLED" not in inv.env
    assert inv.env["FACTORY_API_KEY"] == "fk-online"
    assert inv.secrets == ("fk-online",)
    settings = json.loads(inv.files[SETTINGS])
    assert settings == {"cloudSessionSync": True}
    with pytest.raises(InvalidRequest, match="FACTORY_API_KEY"):
        DroidSpec(DroidOptions(airgapped=False)).check(request())
    # The key may come with the request instead.
    DroidSpec(DroidOptions(airgapped=False)).check(request(env={"FACTORY_API_KEY": "fk"}))


@pytest.mark.parametrize(
    ("spec", "req", "error", "match"),
    [
        (byok(), AgentRequest(provider="claude", prompt="x"), UnsupportedProvider, "claude"),
        (DroidSpec(), request(), InvalidRequest, "custom model"),
        (byok(model=None), request(), InvalidRequest, "model name"),
        (byok(api_key=None), request(), InvalidRequest, "ANTHROPIC_API_KEY"),
        (byok(), request(max_turns=3), InvalidRequest, "turns"),
        (byok(), request(allowed_commands=("ls", " ")), InvalidRequest, "allowed_commands"),
        (byok(), request(allowed_commands=("ls\nrm -rf /",)), InvalidRequest, "allowed"),
        (
            DroidSpec(DroidOptions(airgapped=False, factory_api_key="fk")),
            request(session_id="  "),
            InvalidRequest,
            "session_id",
        ),
    ],
)
def test_check_refuses_what_droid_cannot_do(
    spec: DroidSpec, req: AgentRequest, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        spec.check(req)


def test_options_are_checked_and_keep_keys_out_of_repr() -> None:
    with pytest.raises(InvalidRequest):
        DroidSpec(DroidOptions(max_output_tokens=0))
    options = DroidOptions(api_key=KEY, factory_api_key="fk-secret")
    assert KEY not in repr(options)
    assert "fk-secret" not in repr(options)
    caps = DroidSpec().capabilities()
    assert (caps.interrupt, caps.streaming_deltas, caps.reports_cost, caps.max_turns) == (
        True,
        False,
        False,
        False,
    )


@given(model=st.text(min_size=1), url=st.text(), commands=st.lists(st.text(), max_size=3))
def test_rendered_settings_are_json_that_round_trips(
    model: str, url: str, commands: list[str]
) -> None:
    text = render_settings(
        wire_api=DroidWireApi.RESPONSES,
        base_url=url,
        model=model,
        allowed_commands=tuple(commands),
    )
    settings = json.loads(text)
    assert settings["customModels"][0]["model"] == model
    assert settings["customModels"][0]["baseUrl"] == url
    assert settings.get("commandAllowlist", []) == commands
