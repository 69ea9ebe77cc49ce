"""The REAL agent CLIs against the scripted model server: proof that each dialect is
what the CLIs expect.

Each CLI runs on the host with a private HOME holding minimal generated config (the
provider adapters own the real invocation). A plain text turn, and a write-file tool call
followed by a final answer. Droid is run against all three APIs it can speak. A busybox
container checks that the server is reachable over the Docker bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import docker
import pytest

from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Text
from codeyard.testing.model_server.tools import write_file
from tests.services import service_unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUN_TIMEOUT_S = 120.0
API_KEY = "sk-test-model-server"


@dataclass(frozen=True)
class CliCase:
    provider: str
    dialect: str
    # (binary, server base URL, HOME, prompt) -> (argv, extra env); writes config into HOME.
    setup: Callable[[str, str, Path, str], tuple[list[str], dict[str, str]]]


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def _claude(binary: str, url: str, home: Path, prompt: str) -> tuple[list[str], dict[str, str]]:
    env = {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "IS_SANDBOX": "1",  # --dangerously-skip-permissions is refused as root otherwise
    }
    argv = [binary, "-p", prompt, "--output-format", "stream-json", "--verbose"]
    return [*argv, "--dangerously-skip-permissions"], env


def _codex(binary: str, url: str, home: Path, prompt: str) -> tuple[list[str], dict[str, str]]:
    _write(
        home / ".codex" / "config.toml",
        f"""model = "mock-model"
model_provider = "mock"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[model_providers.mock]
name = "Mock"
base_url = "{url}/v1"
env_key = "MOCK_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
""",
    )
    argv = [binary, "exec", "--json", "--skip-git-repo-check", prompt]
    return argv, {"MOCK_API_KEY": API_KEY}


def _gemini(binary: str, url: str, home: Path, prompt: str) -> tuple[list[str], dict[str, str]]:
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "model": {"name": "gemini-2.5-pro"},
    }
    _write(home / ".gemini" / "settings.json", json.dumps(settings))
    env = {
        "GEMINI_API_KEY": API_KEY,
        "GOOGLE_GEMINI_BASE_URL": url,
        "GEMINI_CLI_NO_RELAUNCH": "true",
    }
    return [binary, "-p", prompt, "--output-format", "stream-json", "--yolo"], env


def _opencode(binary: str, url: str, home: Path, prompt: str) -> tuple[list[str], dict[str, str]]:
    model = {"name": "Mock", "tool_call": True, "limit": {"context": 200000, "output": 8192}}
    config = {
        "$schema": "https://opencode.ai/config.json",
        "model": "mock/mock-model",
        "small_model": "mock/mock-model",
        "autoupdate": False,
        "share": "disabled",
        "permission": {"*": "allow"},
        "provider": {
            "mock": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Mock",
                "options": {"baseURL": f"{url}/v1", "apiKey": API_KEY},
                "models": {"mock-model": model},
            }
        },
    }
    _write(home / ".config" / "opencode" / "opencode.json", json.dumps(config))
    env = {
        f"OPENCODE_DISABLE_{name}": "1"
        for name in ("AUTOUPDATE", "MODELS_FETCH", "LSP_DOWNLOAD", "SHARE")
    }
    return [binary, "run", "--format", "json", prompt], env


def _droid(provider: str) -> Callable[[str, str, Path, str], tuple[list[str], dict[str, str]]]:
    def setup(binary: str, url: str, home: Path, prompt: str) -> tuple[list[str], dict[str, str]]:
        base = url if provider == "anthropic" else f"{url}/v1"
        model = {
            "model": "mock-model",
            "displayName": "Mock",
            "baseUrl": base,
            "apiKey": API_KEY,
            "provider": provider,
            "maxOutputTokens": 8192,
        }
        _write(home / ".factory" / "settings.json", json.dumps({"customModels": [model]}))
        # The first custom model is addressed as custom:<displayName>-0.
        argv = [binary, "exec", "--skip-permissions-unsafe", "--output-format", "stream-json"]
        return [*argv, "--model", "custom:Mock-0", prompt], {"FACTORY_AIRGAP_ENABLED": "true"}

    return setup


CASES = {
    "claude": CliCase("claude", "anthropic", _claude),
    "codex": CliCase("codex", "responses", _codex),
    "gemini": CliCase("gemini", "gemini", _gemini),
    "opencode": CliCase("opencode", "chat", _opencode),
    "droid-anthropic": CliCase("droid", "anthropic", _droid("anthropic")),
    "droid-chat": CliCase("droid", "chat", _droid("generic-chat-completion-api")),
    "droid-responses": CliCase("droid", "responses", _droid("openai")),
}


def _binary(provider: str) -> str:
    try:
        return str(agent_binary(provider))
    except AgentBinaryMissing as exc:
        service_unavailable(f"the {provider} CLI", str(exc), "scripts/install-agents")


async def _run_cli(case: CliCase, server: ModelServer, tmp_path: Path, prompt: str) -> str:
    """Run the CLI to completion in its own session; returns stdout."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    argv, extra = case.setup(_binary(case.provider), server.base_url, home, prompt)
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", **extra}
    process = await anyio.open_process(
        argv, env=env, cwd=work, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(RUN_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                chunks: dict[str, list[bytes]] = {"out": [], "err": []}

                async def drain(name: str, stream: anyio.abc.ByteReceiveStream) -> None:
                    async for chunk in stream:
                        chunks[name].append(chunk)

                tg.start_soon(drain, "out", process.stdout)
                tg.start_soon(drain, "err", process.stderr)
                returncode = await process.wait()
    finally:
        # The CLI's own tool children are in its session: take them down with it.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.aclose()
    stdout = b"".join(chunks["out"]).decode(errors="replace")
    stderr = b"".join(chunks["err"]).decode(errors="replace")
    assert returncode == 0, f"{argv[0]} exited {returncode}\n{stdout[-2000:]}\n{stderr[-2000:]}"
    return stdout


def _check_requests(server: ModelServer, case: CliCase, turns: int) -> None:
    unknown = [r.target for r in server.requests if r.status == 404]
    assert not unknown, f"the CLI called paths the server does not serve: {unknown}"
    main = server.model_requests("main")
    assert {r.dialect for r in main} == {case.dialect}
    assert {r.turn for r in main} == set(range(turns))
    assert all(r.outcome == "completed" for r in server.requests)


@pytest.fixture(params=sorted(CASES))
def cli_case(request: pytest.FixtureRequest) -> CliCase:
    return CASES[str(request.param)]


async def test_plain_text_turn(cli_case: CliCase, tmp_path: Path) -> None:
    answer = "Plain answer from the scripted model: ünïcödé ✓"
    # One delta: some CLIs print each delta as its own line (Gemini's stream-json).
    async with ModelServer(Scenario(turns=[[Text(answer, chunk_size=0)]])) as server:
        stdout = await _run_cli(cli_case, server, tmp_path, "say something")
        _check_requests(server, cli_case, turns=1)
    assert json.dumps(answer)[1:-1] in stdout or answer in stdout


async def test_write_file_tool_call_then_final_answer(cli_case: CliCase, tmp_path: Path) -> None:
    target = tmp_path / "work" / "hello.txt"
    content = "héllo from the model ✓\nsecond line\n"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), write_file(cli_case.provider, str(target), content)],
            [Text("Done: the file is written.", chunk_size=0)],
        ]
    )
    async with ModelServer(scenario) as server:
        stdout = await _run_cli(cli_case, server, tmp_path, "create hello.txt")
        _check_requests(server, cli_case, turns=2)
    assert target.read_text() == content
    assert "Done: the file is written." in stdout


async def test_containers_reach_the_server_over_the_bridge(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    async with ModelServer(Scenario.text("hi"), host="0.0.0.0") as server:
        url = f"{server.bridge_base_url()}/health"

        def fetch() -> bytes:
            # Not PID 1, so `timeout` can stop it; busybox wget's own -T crashes.
            container = docker_client.containers.run(
                test_image, ["sh", "-c", f"timeout 15 wget -qO- {url}"], detach=True
            )
            try:
                assert container.wait(timeout=30)["StatusCode"] == 0
                # Read the logs after exit: a followed log stream (what a non-detached
                # `run` uses) can lose a last line without a newline, like this reply.
                output: bytes = container.logs(stdout=True, stderr=False)
            finally:
                container.remove(force=True)
            return output

        output = await anyio.to_thread.run_sync(fetch)
        assert server.requests[0].target == "/health"
    assert json.loads(output) == {"status": "ok"}
