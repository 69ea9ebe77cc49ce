"""The control-plane command protocol on ``worker:commands`` and its replies.

Wire format (one stream entry per command, one per reply):

- A command entry has the field ``command`` holding a JSON object with a ``type``
  discriminator (``create``, ``delete``, ``status``, ``list``, ``logs``, ``send``), a
  ``request_id`` (a :data:`~codeyard.domain.base.Name`) and optionally ``reply_to``, the
  stream the reply goes to (default :func:`~codeyard.domain.streams.response_stream` of
  the request id). Unknown keys are refused, like everywhere in the domain.
- A reply entry has the field ``reply`` holding a :class:`Reply` as JSON: ``ok`` with a
  JSON ``result``, or ``ok: false`` with ``error`` = ``CodeyardError.to_dict()``
  (rebuild it with :meth:`Reply.raise_for_error`).

:func:`parse_command` turns any entry into a command or raises :class:`InvalidCommand`
whose ``fields`` carry what could be salvaged (``request_id``, ``reply_to``) so the
service can still answer a malformed command; :func:`salvaged_reply_stream` derives the
reply stream from such an error (``None``: nobody to answer, dead-letter it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, JsonValue, TypeAdapter, ValidationError, model_validator

from codeyard.domain.base import (
    JSON_MAX_DEPTH,
    CappedJson,
    DomainModel,
    JsonObject,
    Name,
    cap_json_depth,
    refuse_json_depth,
    validation_errors,
)
from codeyard.domain.errors import (
    CodeyardError,
    InternalError,
    InvalidCommand,
    InvalidRequest,
    error_from_dict,
)
from codeyard.domain.streams import response_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus

COMMAND_FIELD = "command"
REPLY_FIELD = "reply"
#: The error code of a reply to a command whose handler failed unexpectedly (a bug).
INTERNAL_ERROR_CODE = InternalError.code

# Reply streams are Redis keys chosen by clients: printable, no spaces, bounded.
_STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:{}-]{0,255}$")


def _check_stream(value: str) -> str:
    if not _STREAM_RE.match(value):
        raise InvalidRequest("reply_to must match [A-Za-z0-9][A-Za-z0-9_.:{}-]{0,255}")
    return value


StreamName = Annotated[str, AfterValidator(_check_stream)]


class _Command(DomainModel):
    request_id: Name
    reply_to: StreamName | None = None

    @property
    def reply_stream(self) -> str:
        return self.reply_to or response_stream(self.request_id)


class CreateWorker(_Command):
    """Start a worker; headless when ``prompt`` is set (pushed right after spawning)."""

    type: Literal["create"] = "create"
    spec: WorkerSpec = Field(default_factory=WorkerSpec)
    prompt: str | None = None
    #: Chosen by the client to make a retried create idempotent; the manager picks one if unset.
    worker_id: Name | None = None


class DeleteWorker(_Command):
    type: Literal["delete"] = "delete"
    worker_id: Name


class GetStatus(_Command):
    type: Literal["status"] = "status"
    worker_id: Name


class ListWorkers(_Command):
    type: Literal["list"] = "list"


class GetLogs(_Command):
    type: Literal["logs"] = "logs"
    worker_id: Name
    tail: int = Field(default=100, ge=1, le=100_000)


class SendPrompt(_Command):
    """Push a prompt to the worker's input; by default the turn resumes its session."""

    type: Literal["send"] = "send"
    worker_id: Name
    prompt: str
    #: Start a fresh session instead of resuming the worker's previous one.
    new_session: bool = False
    model: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    max_turns: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.prompt.strip():
            raise InvalidRequest("prompt must not be empty", request_id=self.request_id)
        return self


AnyCommand = CreateWorker | DeleteWorker | GetStatus | ListWorkers | GetLogs | SendPrompt
Command = Annotated[AnyCommand, Field(discriminator="type")]
_COMMAND: TypeAdapter[AnyCommand] = TypeAdapter(Command)


def command_fields(command: _Command) -> dict[str, str]:
    """The stream entry for ``command``."""
    return {COMMAND_FIELD: command.model_dump_json()}


def _salvage(doc: object) -> dict[str, str]:
    """The request id and reply stream of a broken command, when they are valid themselves."""
    if not isinstance(doc, dict):
        return {}
    found: dict[str, str] = {}
    for key, check in (("request_id", _valid_name), ("reply_to", _valid_stream)):
        value = doc.get(key)
        if isinstance(value, str) and check(value):
            found[key] = value
    return found


def _valid_name(value: str) -> bool:
    try:
        _NAME.validate_python(value)
    except (ValidationError, CodeyardError):
        return False
    return True


def _valid_stream(value: str) -> bool:
    return _STREAM_RE.match(value) is not None


_NAME: TypeAdapter[str] = TypeAdapter(Name)


def parse_command(fields: Mapping[str, str]) -> AnyCommand:
    """The command in a stream entry; raises :class:`InvalidCommand` and nothing else."""
    raw = fields.get(COMMAND_FIELD)
    if raw is None:
        raise InvalidCommand(f"entry has no {COMMAND_FIELD!r} field", keys=sorted(fields)[:20])
    try:
        doc: Any = json.loads(raw)
    # ValueError: not JSON (or an integer too long); RecursionError: absurdly deep nesting.
    except (ValueError, RecursionError) as exc:
        raise InvalidCommand("command is not JSON", detail=str(exc)[:200]) from None
    salvaged = _salvage(doc)
    if not isinstance(doc, dict):
        raise InvalidCommand("command must be a JSON object")
    try:
        # Before validation: no command field holds free-form JSON, and a deep document
        # must not reach code that recurses over it (error reports, logs).
        refuse_json_depth(doc)
    except InvalidRequest:
        raise InvalidCommand(
            f"command nested deeper than {JSON_MAX_DEPTH} levels", **salvaged
        ) from None
    try:
        return _COMMAND.validate_python(doc)
    except ValidationError as exc:
        raise InvalidCommand(
            "malformed command", errors=validation_errors(exc)[:20], **salvaged
        ) from None
    except CodeyardError as exc:  # domain validators raise typed errors directly
        raise InvalidCommand(
            f"malformed command: {exc.message}", cause=exc.code, **salvaged
        ) from None


def salvaged_reply_stream(error: InvalidCommand) -> str | None:
    """Where to answer a command that failed to parse; ``None`` when nobody can be told."""
    reply_to = error.fields.get("reply_to")
    if isinstance(reply_to, str):
        return reply_to
    request_id = error.fields.get("request_id")
    return response_stream(request_id) if isinstance(request_id, str) else None


# --- results: the ``result`` of an ok reply, per command type --------------------------------


class CreateResult(DomainModel):
    worker_id: Name
    status: WorkerStatus
    #: The request id of the initial prompt pushed to the worker's input (headless mode).
    prompt_request_id: Name | None = None
    #: Taken from the warm pool (no cold start).
    warm: bool = False


class DeleteResult(DomainModel):
    worker_id: Name
    status: WorkerStatus


class SendResult(DomainModel):
    worker_id: Name
    request_id: Name
    #: The input stream entry id of the prompt.
    entry_id: str


class LogsResult(DomainModel):
    worker_id: Name
    logs: str


class ListResult(DomainModel):
    workers: tuple[WorkerRecord, ...] = ()


#: ``status`` answers with the :class:`WorkerRecord` itself.
StatusResult = WorkerRecord


def derived_worker_id(request_id: str) -> str:
    """The worker id a create without one gets: stable per request, so a re-delivered
    create finds the worker its first delivery made instead of making a second."""
    return "w-" + hashlib.sha256(request_id.encode()).hexdigest()[:20]


class Reply(DomainModel):
    """The answer to one command: a JSON ``result`` or an ``error`` (``to_dict()`` form)."""

    #: ``None`` only for a malformed command that named a ``reply_to`` but no valid id.
    request_id: Name | None
    ok: bool
    #: Both capped at ``JSON_MAX_DEPTH`` levels (deeper parts cut, like event details): a
    #: reply must always go out and read back, whatever a handler or raiser put in it.
    result: CappedJson = None
    error: JsonObject | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ok == (self.error is not None):
            raise InvalidRequest("a reply has an error exactly when it is not ok")
        return self

    @classmethod
    def success(cls, request_id: str, result: JsonValue) -> Reply:
        return cls(request_id=request_id, ok=True, result=result)

    @classmethod
    def failure(cls, request_id: str | None, error: CodeyardError) -> Reply:
        # Round-trip through JSON: error fields may hold anything a raiser put there.
        # Capped first: json.dumps recurses, and raisers' fields may nest arbitrarily deep.
        payload = json.loads(json.dumps(cap_json_depth(error.to_dict()), default=str))
        return cls(request_id=request_id, ok=False, error=payload)

    @classmethod
    def internal(cls, request_id: str, detail: str) -> Reply:
        return cls.failure(
            request_id, InternalError("internal error while handling the command", detail=detail)
        )

    def to_fields(self) -> dict[str, str]:
        return {REPLY_FIELD: self.model_dump_json()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Reply:
        """Raises :class:`InvalidRequest` when the entry is not a reply."""
        raw = fields.get(REPLY_FIELD)
        if raw is None:
            raise InvalidRequest(f"entry has no {REPLY_FIELD!r} field")
        return cls.parse(raw)

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else str(self.error.get("code"))

    def raise_for_error(self) -> None:
        """Raise the error as its CodeyardError class (the root one for unknown codes)."""
        if self.error is not None:
            raise error_from_dict(self.error)
