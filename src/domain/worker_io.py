"""What a worker reads from ``worker:{id}:input`` and how its output entries are shaped.

An input entry has one field, ``message``, holding JSON: a prompt (:class:`WorkerInput`)
or ``{"type": "stop"}`` (:class:`WorkerStop`). An output entry has the field ``event``
(an :class:`~codeyard.domain.events.AgentEvent` as JSON) and ``type`` (its payload type,
so readers can filter without parsing).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from codeyard.domain.base import DomainModel, Name, validation_errors
from codeyard.domain.code_host import GitStep
from codeyard.domain.errors import InvalidInput

INPUT_FIELD = "message"
EVENT_FIELD = "event"
TYPE_FIELD = "type"


class InvalidWorkerInput(InvalidInput):
    """An input entry that is neither a prompt nor a stop message."""

    code = "invalid_worker_input"


class WorkerInput(DomainModel):
    """One prompt for the worker's agent. Unset options keep the agent's defaults.

    The turn resumes the session of the worker's previous turn (multi-turn) unless
    ``new_session``; a prompt names no session itself.
    """

    type: Literal["prompt"] = "prompt"
    prompt: str
    request_id: Name | None = None
    timeout_s: float | None = None
    idle_timeout_s: float | None = None
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    #: Start a fresh session instead of resuming the previous turn's.
    new_session: bool = False
    #: Git flow around the turn: clone/branch before, commit/push after (task mode).
    git: GitStep | None = None


class WorkerStop(DomainModel):
    """Ends the worker wrapper after the current turn."""

    type: Literal["stop"] = "stop"


class WorkerAssignment(DomainModel):
    """Turns a standby worker container into worker ``worker_id`` (field ``message`` of the
    one entry on :func:`~codeyard.domain.streams.standby_stream`).

    Every worker container boots in standby: a cold create publishes the assignment right
    before starting the container, a warm-pool claim publishes it to a container already
    running. ``env`` reaches every agent run of the worker; it travels through the event bus,
    so it is for configuration, not secrets (those are injected at container start).
    """

    type: Literal["assign"] = "assign"
    worker_id: Name
    instructions: str | None = None
    allowed_commands: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)


WorkerMessage = Annotated[WorkerInput | WorkerStop, Field(discriminator="type")]
_MESSAGE: TypeAdapter[WorkerInput | WorkerStop] = TypeAdapter(WorkerMessage)


def parse_worker_message(fields: dict[str, str]) -> WorkerInput | WorkerStop:
    """The message of an input entry; raises :class:`InvalidWorkerInput`.

    A JSON object without ``type`` is a prompt, the common case.
    """
    raw = fields.get(INPUT_FIELD)
    if raw is None:
        raise InvalidWorkerInput(f"input entry has no {INPUT_FIELD!r} field", fields=sorted(fields))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidWorkerInput("worker input is not JSON", detail=str(exc)) from exc
    if not isinstance(data, dict):
        raise InvalidWorkerInput("worker input must be a JSON object")
    data.setdefault("type", "prompt")
    try:
        return _MESSAGE.validate_python(data)
    except ValidationError as exc:
        raise InvalidWorkerInput("malformed worker input", errors=validation_errors(exc)) from exc
    except InvalidInput as exc:  # DomainModel validators raise typed errors directly
        raise InvalidWorkerInput(exc.message, **exc.fields) from exc
