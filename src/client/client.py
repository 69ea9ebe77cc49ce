"""CodeyardClient: the API an orchestrator embeds to drive workers.

Control plane (create, delete, status, list, logs, and ``send(via_manager=True)``): a
command on ``worker:commands`` answered by the worker manager on a reply stream. Data
plane (``send``, ``events``, ``wait_result``): the worker's own input and output streams,
without the manager in the path. Everything goes through the
:class:`~codeyard.ports.event_bus.EventBus` port; only :meth:`CodeyardClient.connect`
knows about Redis.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager

import anyio
import structlog
from pydantic import JsonValue, TypeAdapter

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.client.calls import CLEANUP_S, CommandCaller, new_request_id
from codeyard.client.events import WorkerEvent, follow_output, matches_run
from codeyard.client.runs import RunReport, collect_run
from codeyard.domain.agent import AgentResult
from codeyard.domain.base import Name
from codeyard.domain.code_host import GitStep
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
    CreateWorker,
    DeleteResult,
    DeleteWorker,
    GetLogs,
    GetStatus,
    ListResult,
    ListWorkers,
    LogsResult,
    SendPrompt,
    SendResult,
)
from codeyard.domain.errors import CodeyardError, InvalidRequest, InvalidTimeout, Unavailable
from codeyard.domain.streams import COMMANDS_STREAM, worker_input_stream, worker_output_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec
from codeyard.domain.worker_io import INPUT_FIELD, WorkerInput
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

_NAME: TypeAdapter[str] = TypeAdapter(Name)


def _worker(worker_id: str) -> str:
    """``worker_id`` when it is a valid name (it becomes part of a stream key)."""
    return _NAME.validate_python(worker_id)  # raises InvalidName straight from the validator


class CodeyardClient:
    """Async client of the worker manager. Safe to share between tasks (no mutable state
    besides the bus, which is).

    ``reply_timeout_s`` bounds each command's wait for its reply (``timeout_s`` overrides
    it per call: a create that builds an image can take minutes).
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        commands_stream: str = COMMANDS_STREAM,
        reply_timeout_s: float = 60.0,
    ) -> None:
        self._caller = CommandCaller(bus, commands_stream, reply_timeout_s)
        self._bus = bus

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        redis_url: str,
        *,
        commands_stream: str = COMMANDS_STREAM,
        reply_timeout_s: float = 60.0,
    ) -> AsyncIterator[CodeyardClient]:
        """A client on a new Redis connection, closed on exit. Fails fast with
        ``ServiceUnavailable`` when Redis cannot be reached."""
        bus = RedisEventBus.from_url(redis_url)
        try:
            await bus.length(commands_stream)  # connects now rather than on first use
            yield cls(bus, commands_stream=commands_stream, reply_timeout_s=reply_timeout_s)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_S):
                await bus.aclose()

    # --- control plane ---------------------------------------------------------------------

    async def call(self, command: AnyCommand, *, timeout_s: float | None = None) -> JsonValue:
        """Send any command and return its reply's raw ``result`` (see
        :meth:`CommandCaller.call`); a command with its own ``reply_to`` keeps that stream."""
        return await self._caller.call(command, timeout_s=timeout_s)

    async def create(
        self,
        spec: WorkerSpec | None = None,
        *,
        prompt: str | None = None,
        worker_id: str | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> CreateResult:
        """Start a worker; headless when ``prompt`` is set (its run id is the result's
        ``prompt_request_id``). Give ``worker_id``/``request_id`` to make retries idempotent."""
        command = CreateWorker(
            request_id=request_id or new_request_id(),
            spec=spec or WorkerSpec(),
            prompt=prompt,
            worker_id=worker_id,
        )
        return CreateResult.parse(_object(await self.call(command, timeout_s=timeout_s)))

    async def delete(self, worker_id: str, *, timeout_s: float | None = None) -> DeleteResult:
        command = DeleteWorker(request_id=new_request_id(), worker_id=worker_id)
        return DeleteResult.parse(_object(await self.call(command, timeout_s=timeout_s)))

    async def status(self, worker_id: str) -> WorkerRecord:
        command = GetStatus(request_id=new_request_id(), worker_id=worker_id)
        return WorkerRecord.parse(_object(await self.call(command)))

    async def logs(self, worker_id: str, *, tail: int = 100) -> str:
        """The last ``tail`` lines of the worker container's logs."""
        command = GetLogs(request_id=new_request_id(), worker_id=worker_id, tail=tail)
        return LogsResult.parse(_object(await self.call(command))).logs

    async def list(self) -> builtins.list[WorkerRecord]:
        result = await self.call(ListWorkers(request_id=new_request_id()))
        return builtins.list(ListResult.parse(_object(result)).workers)

    # --- data plane ------------------------------------------------------------------------

    async def send(
        self,
        worker_id: str,
        prompt: str,
        *,
        request_id: str | None = None,
        new_session: bool = False,
        model: str | None = None,
        timeout_s: float | None = None,
        max_turns: int | None = None,
        via_manager: bool = False,
        git: GitStep | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SendResult:
        """Queue a prompt for the worker; its events carry ``run_id = request_id``.

        By default the :class:`WorkerInput` goes straight to ``worker:{id}:input`` (the
        manager is not in the path, so an unknown worker is not detected); ``via_manager``
        sends a :class:`SendPrompt` command instead, which checks the worker exists.
        ``env``: extra environment of this turn only (agent and git; direct sends only).
        ``git``: the worker's git flow around the turn (clone/branch, commit/push; direct
        sends only); its report arrives as a ``git`` lifecycle event (see :meth:`wait_run`).
        """
        rid = request_id or new_request_id()
        if via_manager:
            if git is not None or env:
                raise InvalidRequest("git steps and env go straight to the worker")
            command = SendPrompt(
                request_id=rid,
                worker_id=worker_id,
                prompt=prompt,
                new_session=new_session,
                model=model,
                timeout_s=timeout_s,
                max_turns=max_turns,
            )
            return SendResult.parse(_object(await self.call(command)))
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidTimeout("timeout_s must be > 0", timeout_s=timeout_s)
        if not prompt.strip():
            raise InvalidRequest("prompt must not be empty", request_id=rid)
        message = WorkerInput(
            prompt=prompt,
            request_id=rid,
            model=model,
            timeout_s=timeout_s,
            max_turns=max_turns,
            new_session=new_session,
            git=git,
            env=dict(env or {}),
        )
        stream = worker_input_stream(_worker(worker_id))
        entry_id = await self._bus.publish(stream, {INPUT_FIELD: message.model_dump_json()})
        return SendResult(worker_id=worker_id, request_id=rid, entry_id=entry_id)

    async def events(
        self, worker_id: str, *, after: str = "0-0", block_s: float = 1.0
    ) -> AsyncGenerator[WorkerEvent, None]:
        """The worker's output events after entry ``after``, endlessly (stop by leaving the
        loop). Resume from any event's ``entry_id``. Malformed entries are skipped with a
        warning, repeated events (an id already yielded) silently (see
        :class:`~codeyard.client.events.SeenEvents`); bus errors (``ServiceUnavailable``)
        propagate."""
        stream = worker_output_stream(_worker(worker_id))
        async with aclosing(follow_output(self._bus, stream, after, block_s)) as events:
            async for event in events:
                yield event

    async def wait_result(
        self,
        worker_id: str,
        *,
        request_id: str | None = None,
        after: str = "0-0",
        timeout_s: float | None = None,
    ) -> AgentResult:
        """The first result after entry ``after``: of the run ``request_id`` when given
        (or the failed result the manager publishes when the container died), else of
        any run. ``TimeoutError`` after ``timeout_s`` (``None``: wait forever)."""
        with anyio.fail_after(timeout_s):
            async with aclosing(self.events(worker_id, after=after)) as events:
                async for item in events:
                    result = matches_run(item, request_id)
                    if result is not None:
                        return result
        raise AssertionError("unreachable: events() never ends")  # pragma: no cover

    async def wait_run(
        self,
        worker_id: str,
        request_id: str,
        *,
        after: str = "0-0",
        timeout_s: float | None = None,
    ) -> RunReport:
        """Like :meth:`wait_result` for one run, with its git report and cost collected."""
        with anyio.fail_after(timeout_s):
            async with aclosing(self.events(worker_id, after=after)) as events:
                return await collect_run(events, request_id)

    async def run(
        self,
        spec: WorkerSpec | None,
        prompt: str,
        *,
        timeout_s: float | None = None,
        delete: bool = True,
    ) -> AgentResult:
        """Create a headless worker for ``prompt``, wait for its result, delete it.

        ``timeout_s`` bounds the create and the wait together (``TimeoutError`` or
        ``ReplyTimeout``). The worker is deleted whatever happens once it may exist (a
        refused create made none); a failing delete is logged when something else failed
        already, raised otherwise (the caller must learn about a leaked worker).
        """
        worker_id = f"w-{uuid.uuid4().hex[:20]}"
        deadline = None if timeout_s is None else anyio.current_time() + timeout_s
        created: CreateResult | None = None
        try:
            created = await self.create(
                spec, prompt=prompt, worker_id=worker_id, timeout_s=_left(deadline)
            )
            result = await self.wait_result(
                worker_id, request_id=created.prompt_request_id, timeout_s=_left(deadline)
            )
        except BaseException as exc:  # cancellation too: the shielded delete still runs
            if delete and (created is not None or _may_exist(exc)):
                await self._delete_shielded(worker_id, quiet=True)
            raise
        if delete:
            await self._delete_shielded(worker_id, quiet=False)
        return result

    async def _delete_shielded(self, worker_id: str, *, quiet: bool) -> None:
        limit = self._caller.reply_timeout_s + CLEANUP_S  # the reply timeout fires first
        with anyio.CancelScope(shield=True), anyio.move_on_after(limit) as scope:
            try:
                await self.delete(worker_id)
            except CodeyardError as exc:
                if not quiet:
                    raise
                log.warning("worker not deleted", worker_id=worker_id, error=str(exc))
        if scope.cancelled_caught:
            log.warning("worker deletion timed out", worker_id=worker_id, limit_s=limit)


def _object(result: JsonValue) -> dict[str, JsonValue]:
    if not isinstance(result, dict):
        kind = type(result).__name__
        raise InvalidRequest("the reply's result is not an object", result_type=kind)
    return result


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (at least a millisecond: 0 means "no wait" below)."""
    return None if deadline is None else max(deadline - anyio.current_time(), 0.001)


def _may_exist(exc: BaseException) -> bool:
    """Whether the worker may exist after the create failed with ``exc``: anything but a
    typed refusal (an unavailable manager or transport leaves the outcome unknown)."""
    return not isinstance(exc, CodeyardError) or isinstance(exc, Unavailable)
