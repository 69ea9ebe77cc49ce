"""The service commands as a subprocess (the installed ``codeyard`` entry point) against
real Redis, a fake worker manager (a real CommandService) and, for attach, a fake worker
answering prompts on its input stream."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from pydantic import JsonValue

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.commands import AnyCommand, SendPrompt
from codeyard.domain.events import (
    AgentEvent,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    ToolUsePayload,
)
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD, WorkerInput, parse_worker_message
from tests.unit.client_support import FakeManager, manager, result_event

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

CODEYARD = str(Path(sys.executable).with_name("codeyard"))
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CODEYARD_")} | {"COLUMNS": "240"}


class SendingManager(FakeManager):
    """Also plays the worker for a sent prompt: its result follows at once ("fail" fails)."""

    async def handle(self, command: AnyCommand) -> JsonValue:
        answer = await super().handle(command)
        if isinstance(command, SendPrompt):
            reason = "boom" if command.prompt == "fail" else None
            fields = result_event(command.worker_id, command.request_id, "did it", reason)
            await self.bus.publish(worker_output_stream(command.worker_id), fields)
        return answer


@pytest.fixture
async def bus(redis_db: str) -> AsyncIterator[RedisEventBus]:
    bus = RedisEventBus.from_url(redis_db)
    try:
        yield bus
    finally:
        await bus.aclose()


@pytest.fixture
async def served(bus: RedisEventBus) -> AsyncIterator[SendingManager]:
    handler = SendingManager(bus)
    async with manager(bus, handler):
        yield handler


async def cli(redis_db: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run ``codeyard ARGS --service REDIS``; returns exit code, stdout, stderr."""
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [CODEYARD, *args, "--service", redis_db], input=stdin.encode(), env=ENV, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def publish(bus: RedisEventBus, worker_id: str, run_id: str | None, p: EventPayload) -> None:
    event = AgentEvent(worker_id=worker_id, run_id=run_id, seq=0, payload=p)
    fields = {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: p.type}
    await bus.publish(worker_output_stream(worker_id), fields)


async def test_ls_and_status_print_tables_and_json(redis_db: str, served: FakeManager) -> None:
    code, out, _ = await cli(redis_db, "ls")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["ID", "STATUS", "AGENT", "HOST", "AGE", "IMAGE", "ERROR"]
    assert [row[:3] for row in rows[1:]] == [["w-1", "idle", "claude"], ["w-2", "idle", "claude"]]
    code, out, _ = await cli(redis_db, "ls", "--json")
    assert code == 0
    assert [w["worker_id"] for w in json.loads(out)] == ["w-1", "w-2"]

    code, out, _ = await cli(redis_db, "status", "w-7")
    assert code == 0
    fields = {
        key: value.strip() for key, value in (line.split(None, 1) for line in out.splitlines())
    }
    assert fields["worker"] == "w-7"
    assert fields["status"] == "idle"
    assert fields["heartbeat"].endswith("ago")
    assert fields["ended"] == "-"
    code, out, _ = await cli(redis_db, "status", "w-7", "--json")
    assert (code, json.loads(out)["status"]) == (0, "idle")


async def test_an_unknown_worker_exits_1(redis_db: str, served: FakeManager) -> None:
    for args in (["status", "missing"], ["logs", "missing"], ["send", "missing", "hi"]):
        code, out, err = await cli(redis_db, *args)
        assert (code, out) == (1, ""), err
        assert "no such worker: missing" in err


async def test_send_wait_prints_the_result_and_fails_on_an_error(
    redis_db: str, served: FakeManager
) -> None:
    code, out, err = await cli(redis_db, "send", "w-1", "go", "--wait", "--new-session")
    assert (code, out) == (0, "did it\n"), err
    assert "result: success" in err
    (sent,) = [c for c in served.seen if isinstance(c, SendPrompt)]
    assert (sent.prompt, sent.new_session) == ("go", True)

    code, out, err = await cli(redis_db, "send", "w-1", "fail", "--wait", "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["worker_id"], data["result"]["status"]) == ("w-1", "error")

    code, out, _ = await cli(redis_db, "send", "w-1", "later")
    assert code == 0
    assert out.strip() == served.seen[-1].request_id


async def test_rm_prints_each_final_status(redis_db: str, served: FakeManager) -> None:
    code, out, err = await cli(redis_db, "rm", "w-1", "missing", "w-2")
    assert code == 1
    assert out.splitlines() == ["w-1\tstopped", "w-2\tstopped"]
    assert "no such worker: missing" in err
    code, out, _ = await cli(redis_db, "rm", "w-3", "--json")
    assert (code, json.loads(out)) == (0, [{"worker_id": "w-3", "status": "stopped"}])
    assert served.deleted == ["w-1", "w-2", "w-3"]


async def test_create_prints_the_id_and_waits_for_the_prompt(
    redis_db: str, served: FakeManager, tmp_path: Path
) -> None:
    instructions = tmp_path / "AGENTS.md"
    instructions.write_text("be brief", encoding="utf-8")
    args = ["create", "--agent", "codex", "--instructions-file", str(instructions)]
    code, out, err = await cli(redis_db, *args, "--allow", "ls", "--allow", "git status")
    assert (code, out) == (0, "w-made\n"), err
    spec = served.seen[-1].spec  # type: ignore[union-attr]
    assert (spec.agent, spec.instructions) == ("codex", "be brief")
    assert spec.allowed_commands == ("ls", "git status")

    code, out, err = await cli(redis_db, "create", "--prompt", "hi", "--wait")
    assert (code, out) == (0, "w-made\ndid: hi\n"), err
    code, out, _ = await cli(redis_db, "create", "--prompt", "hi", "--wait", "--json")
    data = json.loads(out)
    assert (code, data["worker_id"], data["result"]["text"]) == (0, "w-made", "did: hi")


async def test_logs_tail_and_follow_until_the_worker_stops(
    redis_db: str, served: FakeManager, bus: RedisEventBus
) -> None:
    code, out, _ = await cli(redis_db, "logs", "w-1", "--tail", "5")
    assert (code, out) == (0, "tail=5\n")

    await publish(bus, "w-1", "r-1", InitPayload(session_id="s-1"))
    await publish(bus, "w-1", "r-1", MessagePayload(text="Look", delta=True, message_id="m"))
    await publish(bus, "w-1", "r-1", MessagePayload(text="ing.", delta=True, message_id="m"))
    await publish(bus, "w-1", None, LifecyclePayload(state="heartbeat"))
    bash = ToolUsePayload(tool_use_id="t", name="Bash", input={"command": "ls"})
    await publish(bus, "w-1", "r-1", bash)
    await bus.publish(worker_output_stream("w-1"), result_event("w-1", "r-1", "All done"))
    await publish(bus, "w-1", None, LifecyclePayload(state="stopped", detail={"reason": "x"}))
    code, out, err = await cli(redis_db, "logs", "-f", "w-1")
    assert code == 0, err
    shown = [line.split(None, 1)[1] for line in out.splitlines()]
    assert shown == [
        "init        session s-1",
        "message     Looking.",
        "tool_use    Bash ls",
        "result      success, cost n/a | All done",
        "lifecycle   stopped reason=x",
    ]
    code, out, _ = await cli(redis_db, "logs", "-f", "w-1", "--json")
    events = [AgentEvent.parse(line) for line in out.splitlines()]
    assert code == 0
    assert [e.type.value for e in events] == [
        "init", "message", "message", "lifecycle", "tool_use", "result", "lifecycle"
    ]  # fmt: skip


async def fake_worker(bus: RedisEventBus, worker_id: str) -> None:
    """Answers every prompt on the worker's input with a message and a result."""
    cursor = "0-0"
    while True:
        for entry in await bus.read(worker_input_stream(worker_id), after=cursor, block_s=0.2):
            cursor = entry.id
            message = parse_worker_message(dict(entry.fields))
            assert isinstance(message, WorkerInput)
            rid = message.request_id
            await publish(bus, worker_id, rid, MessagePayload(text=f"on {message.prompt}"))
            fields = result_event(worker_id, rid, f"did: {message.prompt}")
            await bus.publish(worker_output_stream(worker_id), fields)


async def test_attach_sends_each_line_and_ends_after_the_last_result(
    redis_db: str, served: FakeManager, bus: RedisEventBus
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake_worker, bus, "w-a")
        code, out, err = await cli(redis_db, "attach", "w-a", stdin="first\n\nsecond\n")
        tg.cancel_scope.cancel()
    assert code == 0, err
    shown = [line.split(None, 1)[1] for line in out.splitlines()]
    for prompt in ("first", "second"):  # the two runs may interleave, each in order
        run = [f"prompt      {prompt}", f"message     on {prompt}"]
        run.append(f"result      success, cost n/a | did: {prompt}")
        assert [line for line in shown if line.endswith(prompt)] == run
    assert len(shown) == 6


async def test_attach_ends_when_the_worker_stops_while_stdin_is_open(
    redis_db: str, served: FakeManager, bus: RedisEventBus
) -> None:
    cmd = [CODEYARD, "attach", "w-s", "--service", redis_db]
    async with await anyio.open_process(cmd, env=ENV) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send(b"hello\n")
        line = await process.stdout.receive()
        assert b"prompt      hello" in line
        await publish(bus, "w-s", None, LifecyclePayload(state="stopped"))
        with anyio.fail_after(30):
            code = await process.wait()  # stdin still open: the stop alone ends attach
        assert code == 0
        rest = b""
        async for chunk in process.stdout:
            rest += chunk
    assert b"lifecycle   stopped" in line + rest
    (entry,) = await bus.read(worker_input_stream("w-s"))
    message = parse_worker_message(dict(entry.fields))
    assert isinstance(message, WorkerInput)
    assert message.prompt == "hello"


async def test_a_missing_worker_is_refused_by_follow_and_attach(
    redis_db: str, served: FakeManager
) -> None:
    for args in (["logs", "-f", "missing"], ["attach", "missing"]):
        code, _, err = await cli(redis_db, *args)
        assert code == 1
        assert "no such worker: missing" in err
