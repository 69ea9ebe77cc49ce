"""ProcessLauncher: start an agent CLI somewhere (a local subprocess, ``exec`` in a worker
container) and talk to it through its pipes and signals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class ProcessHandle(Protocol):
    """A started process and its whole process group.

    Contract:
    - ``stdout_chunks``/``stderr_chunks`` yield raw bytes as they arrive (arbitrary chunk
      boundaries: callers split lines themselves) and end at EOF. Each may be iterated once.
      They and ``wait`` are cancel-safe: cancelling a pending ``__anext__``/``wait`` loses
      no bytes and leaves them usable (the CLI run loop races both pipes and the exit).
    - ``wait`` returns when the leader exits, even while a child it left keeps the pipes
      open.
    - ``signal_group`` sends a signal to the process group the process leads; on a process
      that already exited it is a no-op (never an error).
    - ``wait`` returns the exit code; death by signal N is reported as ``128 + N`` (the
      shell's convention, which is also what ``docker exec`` reports).
    - ``aclose`` SIGKILLs the group if anything is still alive, reaps it and closes the
      pipes; idempotent, safe under cancellation (it shields itself with a deadline).
    """

    @property
    def pid(self) -> int | None:
        """The leader's pid where it is known (``None`` for remote processes)."""
        ...

    @property
    def returncode(self) -> int | None:
        """The exit code once known, else ``None``."""
        ...

    def stdout_chunks(self) -> AsyncIterator[bytes]:
        """Raw stdout bytes until EOF."""
        ...

    def stderr_chunks(self) -> AsyncIterator[bytes]:
        """Raw stderr bytes until EOF."""
        ...

    async def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        ...

    async def wait(self) -> int:
        """Wait for the leader to exit; its exit code."""
        ...

    async def aclose(self) -> None:
        """Kill whatever is left of the group and release the pipes."""
        ...


@runtime_checkable
class ProcessLauncher(Protocol):
    """Starts processes in their own process group (session) so they can be signalled and
    killed as a whole — agent CLIs leave tool child processes behind otherwise.

    Contract: ``start`` raises ``InvalidInput`` for an empty argv, ``NotFound`` when the
    executable does not exist, ``ServiceUnavailable`` when the place to run it (a container,
    the engine) is gone. ``env`` is the COMPLETE environment: nothing is inherited, except
    that a launcher may add one tracking variable, ``CODEYARD_PROCESS_MARKER``.
    """

    async def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
    ) -> ProcessHandle:
        """Start ``argv`` with stdin closed and stdout/stderr piped."""
        ...
