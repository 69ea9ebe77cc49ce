"""From an input entry to the :class:`AgentRequest` a worker wrapper runs, and back from
the agent's result to the cost the run is billed.

* **Worker-wide request settings** (a standby worker's assignment): ``base_env`` is under
  every turn's ``env`` (the prompt's ``env`` wins), ``pinned_env`` over it (the PATH of an
  ``allowed_commands`` shim, which no prompt may widen), ``allowed_commands`` goes into
  every request.
* **Secrets** (``secret_env``: the container's credential-store variables, see
  :mod:`codeyard.domain.secrets`) go into every turn's env over ``base_env`` (a prompt's
  ``env`` may still set the variable: its sender knows what it sends). A prompt's
  ``{{secret:NAME}}`` references are filled in from them, and from nothing else, by
  :meth:`RequestMaker.with_secrets` right before the request goes to the agent
  (:mod:`codeyard.domain.prompt_secrets`); the filled-in prompt lives in this process only.
* **Costs**: some CLIs report a session's running total; :class:`SessionCosts` turns it
  into the run's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.prompt_secrets import fill_secrets
from codeyard.domain.worker_io import WorkerInput


@dataclass(frozen=True)
class RequestMaker:
    """What every request of one worker shares (module doc)."""

    provider: str
    worker_id: str
    workdir: Path
    base_env: Mapping[str, str] = field(default_factory=dict)
    pinned_env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    allowed_commands: tuple[str, ...] = ()

    def request(self, message: WorkerInput, session_id: str | None) -> AgentRequest:
        """The request for ``message``, resuming ``session_id`` unless it asks for a new
        session; its prompt still holds its secret references."""
        options: dict[str, object] = {
            key: value
            for key, value in (
                ("id", message.request_id),
                ("timeout_s", message.timeout_s),
                ("idle_timeout_s", message.idle_timeout_s),
                ("model", message.model),
                ("max_turns", message.max_turns),
            )
            if value is not None
        }
        idle_default = AgentRequest.model_fields["idle_timeout_s"].default
        if message.idle_timeout_s is None and message.timeout_s is not None:
            # A short hard deadline alone should not be refused for exceeding the default
            # idle timeout: the idle timeout then follows it.
            options["idle_timeout_s"] = min(idle_default, message.timeout_s)
        return AgentRequest(
            prompt=message.prompt,
            provider=self.provider,
            workdir=str(self.workdir),
            worker_id=self.worker_id,
            session_id=None if message.new_session else session_id,
            env={**self.base_env, **self.secret_env, **message.env, **self.pinned_env},
            allowed_commands=self.allowed_commands,
            **options,
        )

    def with_secrets(self, request: AgentRequest) -> AgentRequest:
        """``request`` with its prompt's secret references filled in (``UnknownPromptSecret``
        for one that is not among the worker's secrets)."""
        prompt = fill_secrets(request.prompt, self.secret_env)
        if prompt is request.prompt:
            return request
        # model_copy: the request was validated already, and a re-validation error could
        # quote the prompt, secrets and all.
        return request.model_copy(update={"prompt": prompt})


class SessionCosts:
    """The last running cost total reported per session, for agents whose results report
    one (``cumulative_cost``); for the others, costs pass through unchanged."""

    def __init__(self, *, cumulative: bool) -> None:
        self._cumulative = cumulative
        self._totals: dict[str, float] = {}

    def own_cost(self, request: AgentRequest, event: AgentEvent) -> AgentEvent:
        """A result's cost as this run's own: some CLIs report the session's running total."""
        payload = event.payload
        if not isinstance(payload, ResultPayload):
            return event
        result = payload.result
        total, session = result.cost_usd, result.session_id
        if total is None:
            return event
        if session is not None and self._cumulative:
            earlier = self._totals.get(request.session_id or "", 0.0)
            self._totals[session] = total
            if request.session_id is not None and total >= earlier:
                own = result.model_copy(update={"cost_usd": round(total - earlier, 10)})
                return event.model_copy(update={"payload": ResultPayload(result=own)})
        return event
