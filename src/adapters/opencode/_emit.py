"""Stamping one run's payloads into events (the agent's counterpart of the stdout runner's
``RunStream``): redacted, counted for the final result, numbered by one sequencer."""

from __future__ import annotations

from codeyard.adapters.cli.outcome import Tally
from codeyard.adapters.cli.redact import Redactor
from codeyard.adapters.opencode.events import PROVIDER
from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent, EventPayload, EventSequencer


class Emitter:
    """Stamps one run's payloads: redacted, counted for the result, numbered."""

    def __init__(self, request: AgentRequest) -> None:
        self.sequencer = EventSequencer(
            provider=PROVIDER,
            worker_id=request.worker_id,
            task_id=request.task_id,
            run_id=request.id,
        )
        self.tally = Tally(provider=PROVIDER, stderr_tail_lines=0)
        self.redactor = Redactor()

    def stamp(self, payload: EventPayload, raw: str | None = None) -> AgentEvent:
        if self.redactor.active:
            data = payload.model_dump(mode="python")
            clean = self.redactor.scrub(data)
            if clean is not data:
                payload = type(payload).model_validate(clean)
        self.tally.observe(payload)
        return self.sequencer.stamp(payload, raw=raw)
