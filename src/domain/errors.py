"""The error tree of codeyard.

One root, :class:`CodeyardError`, then a handful of categories that callers branch on
(invalid input, not found, conflict, unavailable, agent failure, quota, cancelled). Every
error carries a stable machine ``code`` and structured ``fields`` so that it can cross a
process boundary (a Redis reply, a JSON log line) and be rebuilt on the other side with
:func:`error_from_dict`.

These errors deliberately do *not* subclass ``ValueError``: pydantic wraps ``ValueError``
raised inside validators into its own ``ValidationError``, while any other exception type
propagates unchanged. That is what lets model validators raise ``PromptRequired`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class CodeyardError(Exception):
    """Root of every error codeyard raises on purpose."""

    code: ClassVar[str] = "codeyard_error"
    #: Whether retrying the same operation later may succeed.
    retryable: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[CodeyardError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Codes are the wire identity of an error: two classes sharing one is a bug.
        existing = CodeyardError._registry.get(cls.code)
        if existing is not None and existing is not cls:
            msg = f"error code {cls.code!r} used by both {existing.__name__} and {cls.__name__}"
            raise TypeError(msg)
        CodeyardError._registry[cls.code] = cls

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = dict(fields)

    def __str__(self) -> str:
        if not self.fields:
            return self.message
        details = ", ".join(f"{k}={v!r}" for k, v in sorted(self.fields.items()))
        return f"{self.message} ({details})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.fields!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"code", "message", "fields", "retryable"}``."""
        return {
            "code": self.code,
            "message": self.message,
            "fields": self.fields,
            "retryable": self.retryable,
        }


def error_from_dict(data: Mapping[str, Any]) -> CodeyardError:
    """Rebuild an error sent by :meth:`CodeyardError.to_dict`; unknown codes give the root."""
    cls = CodeyardError._registry.get(str(data.get("code", "")), CodeyardError)
    fields = data.get("fields") or {}
    err = cls.__new__(cls)
    CodeyardError.__init__(err, str(data.get("message", "")), **dict(fields))
    return err


# --- categories ---------------------------------------------------------------------------


class InvalidInput(CodeyardError):
    """The caller sent something that can never succeed as sent."""

    code = "invalid_input"


class NotFound(CodeyardError):
    """The named thing does not exist (or no longer does)."""

    code = "not_found"


class Conflict(CodeyardError):
    """The operation clashes with the current state (lost lease, bad transition...)."""

    code = "conflict"


class Unavailable(CodeyardError):
    """A backing service or engine could not be reached; retrying later may work."""

    code = "unavailable"
    retryable = True


class AgentError(CodeyardError):
    """The agent CLI or its model failed."""

    code = "agent_error"


class QuotaExceeded(CodeyardError):
    """A configured limit (workers, queue size...) was hit."""

    code = "quota_exceeded"
    retryable = True


class Cancelled(CodeyardError):
    """The work was cancelled on request. Not raised for anyio cancellation itself."""

    code = "cancelled"


class InternalError(CodeyardError):
    """A bug: a handler failed with an exception nobody raised on purpose. Replies carry it
    so a client gets an answer; the traceback stays in the service's log."""

    code = "internal"


class PoisonCommand(CodeyardError):
    """A command that failed to complete too many times and went to the dead letter."""

    code = "poison_command"


# --- invalid input ------------------------------------------------------------------------


class PromptRequired(InvalidInput):
    code = "prompt_required"


class InvalidTimeout(InvalidInput):
    code = "invalid_timeout"


class InvalidName(InvalidInput):
    """An identifier (provider, worker id, label...) has a shape we refuse."""

    code = "invalid_name"


class InvalidRequest(InvalidInput):
    """Generic validation failure; ``fields["errors"]`` lists ``{"loc", "msg"}`` items."""

    code = "invalid_request"


class InvalidCommand(InvalidInput):
    """A control-plane command could not be parsed or is unknown."""

    code = "invalid_command"


class UnsupportedProvider(InvalidInput):
    code = "unsupported_provider"


class ProviderLoadFailed(UnsupportedProvider):
    """A registered provider (a plugin's entry point, a built-in's module) cannot be loaded;
    ``fields["entry_point"]`` names it."""

    code = "provider_load_failed"


# --- not found ----------------------------------------------------------------------------


class WorkerNotFound(NotFound):
    code = "worker_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class ContainerNotFound(NotFound):
    code = "container_not_found"


class ImageNotFound(NotFound):
    code = "image_not_found"


class SecretNotFound(NotFound):
    """The credential store holds no secret of that name (``fields["name"]``)."""

    code = "secret_not_found"


class ExecutableNotFound(NotFound):
    """A program to start (an agent CLI binary) does not exist where it was looked for."""

    code = "executable_not_found"


# --- conflict -----------------------------------------------------------------------------


class AlreadyExists(Conflict):
    code = "already_exists"


class LeaseLost(Conflict):
    """The caller no longer holds the lease on a job (expired or claimed by another)."""

    code = "lease_lost"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ForwardLoop(Conflict):
    """A command was forwarded between managers more times than allowed (``fields``:
    ``forwarded``, ``max_forwards``, ``stream``)."""

    code = "forward_loop"


# --- unavailable --------------------------------------------------------------------------


class ServiceUnavailable(Unavailable):
    """``fields["service"]`` names it: redis, postgres, docker..."""

    code = "service_unavailable"


class ReplyTimeout(ServiceUnavailable):
    """No reply to a command within the deadline (``service="worker-manager"``, with
    ``request_id`` and ``timeout_s``). The command may still run later: retry with the
    same request id to stay idempotent."""

    code = "reply_timeout"


class RuntimeNotAvailable(Unavailable):
    """A container runtime (sysbox-runc, runsc...) the engine does not offer."""

    code = "runtime_not_available"
    retryable = False


class CredentialStoreUnreadable(Unavailable):
    """The credential store cannot be opened: wrong or malformed key, damaged file. Never
    carries a secret value; retrying with the same key cannot help."""

    code = "credential_store_unreadable"
    retryable = False


class ImageBuildFailed(Unavailable):
    code = "image_build_failed"
    retryable = False


# --- agent --------------------------------------------------------------------------------


class AgentFailed(AgentError):
    code = "agent_failed"


class AgentTimedOut(AgentError):
    code = "agent_timed_out"


class ResumeUnsupported(AgentError):
    """The provider cannot resume a session in this setting (e.g. Droid offline)."""

    code = "resume_unsupported"


class RateLimited(AgentError):
    code = "rate_limited"
    retryable = True


class ReviewUnparseable(AgentError):
    """A reviewer agent's answer held no usable verdict JSON (``fields``: ``pr``,
    ``reason``, ``excerpt`` of the answer)."""

    code = "review_unparseable"
