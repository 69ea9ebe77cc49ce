"""What is asked of a coding agent and what it answers: AgentRequest, AgentResult."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, NonNegativeFloat, NonNegativeInt, model_validator

from codeyard.domain.base import DomainModel, Name
from codeyard.domain.errors import InvalidName, InvalidTimeout, PromptRequired


class AgentProvider(StrEnum):
    """The agent CLIs codeyard ships adapters for.

    Requests name a provider by string so third-party adapters (registered by entry point)
    work without touching this enum; these are the built-in names.
    """

    CLAUDE = "claude"
    DROID = "droid"
    OPENCODE = "opencode"
    CODEX = "codex"
    GEMINI = "gemini"


def _check_provider(value: str) -> str:
    if not value or not value.replace("-", "").replace("_", "").isalnum() or not value.islower():
        raise InvalidName("provider must be a lowercase name like 'claude'", value=value)
    return value


ProviderName = Annotated[str, AfterValidator(_check_provider)]


def _new_id() -> str:
    return uuid.uuid4().hex


class AgentCapabilities(DomainModel):
    """What a provider adapter can do; callers check before asking."""

    resume: bool
    interrupt: bool
    streaming_deltas: bool
    reports_cost: bool
    max_turns: bool
    #: A resumed run's ``cost_usd`` includes the earlier runs of its session (Claude Code's
    #: ``total_cost_usd``); the worker turns it into the run's own cost.
    cumulative_cost: bool = False


class AgentRequest(DomainModel):
    """One turn asked of an agent.

    ``timeout_s`` is the hard deadline of the whole run; ``idle_timeout_s`` fires when the
    CLI prints nothing for that long. ``session_id`` resumes an earlier session.
    """

    id: Name = Field(default_factory=_new_id)
    prompt: str
    provider: ProviderName = AgentProvider.CLAUDE
    model: str | None = None
    workdir: str | None = None
    session_id: str | None = None
    timeout_s: float = 1800.0
    idle_timeout_s: float = 300.0
    instructions: str | None = None
    system_prompt_append: str | None = None
    allowed_commands: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    max_turns: int | None = Field(default=None, ge=1)
    base_url: str | None = None
    worker_id: Name | None = None
    task_id: Name | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.prompt.strip():
            raise PromptRequired("prompt must not be empty", request_id=self.id)
        for name, value in (("timeout_s", self.timeout_s), ("idle_timeout_s", self.idle_timeout_s)):
            # NaN compares false with everything, so test the valid range positively.
            if not (0 < value <= 7 * 24 * 3600):
                raise InvalidTimeout(f"{name} must be in (0, 604800] seconds", **{name: value})
        if self.idle_timeout_s > self.timeout_s:
            raise InvalidTimeout(
                "idle_timeout_s must not exceed timeout_s",
                idle_timeout_s=self.idle_timeout_s,
                timeout_s=self.timeout_s,
            )
        for key in self.env:
            if not key or "=" in key or "\x00" in key:
                raise InvalidName("environment variable names must be non-empty, no '='", key=key)
        return self


class ResultStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class TokenUsage(DomainModel):
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    cache_read_tokens: NonNegativeInt = 0
    cache_write_tokens: NonNegativeInt = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


class AgentResult(DomainModel):
    """How one run ended. Every run ends in exactly one, synthesized if the CLI gave none."""

    status: ResultStatus
    provider: ProviderName
    session_id: str | None = None
    text: str = ""
    cost_usd: NonNegativeFloat | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    turns: NonNegativeInt = 0
    duration_s: NonNegativeFloat = 0.0
    error: str | None = None
    #: Provider-specific reason the run stopped (Claude's ``terminal_reason``, exit codes...).
    terminal_reason: str | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.SUCCESS
