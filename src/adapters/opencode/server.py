"""One ``opencode serve`` process and its HTTP client: start, health, stop.

Start-up (FACTS: ~11 s; 2-3 s measured here, fresh home included; a request sent too
early once hung forever): the process is started through the ``ProcessLauncher`` (its own
process group), then ``GET /global/health`` is polled with a SHORT per-request timeout
until it answers ``healthy`` — never one long request. If the server exits meanwhile (most often:
the port was taken between choosing it and binding it), another port is tried. Exit code
127 means the binary does not exist: ``ExecutableNotFound`` is raised, as the launcher
would for a direct start. A server that does not get healthy within ``start_timeout_s``
is killed and reported with the tail of its log.

Stopping is SIGTERM (OpenCode closes its session database cleanly), then SIGKILL of the
whole group after a grace; shielded from cancellation and bounded by a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import anyio
import anyio.to_thread

from codeyard.adapters.cli.home import write_home_files
from codeyard.adapters.cli.redact import Redactor
from codeyard.adapters.opencode.api import OpencodeApi
from codeyard.adapters.opencode.config import LOG_FILE, USERNAME, OpencodeConfig, ServerSetup
from codeyard.domain.errors import AgentFailed, ExecutableNotFound
from codeyard.ports.process_launcher import ProcessHandle, ProcessLauncher

_POLL_S = 0.1
_TERM_GRACE_S = 3.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (a start retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class OpencodeServer:
    """A healthy server: ``api`` talks to it, ``handle`` is its process group."""

    def __init__(
        self, handle: ProcessHandle, api: OpencodeApi, setup: ServerSetup, log: Path
    ) -> None:
        self.handle = handle
        self.api = api
        self.setup = setup
        self.redactor = Redactor(setup.secrets)
        self._log = log
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and self.handle.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log (redacted), for error messages."""
        return read_tail(self._log, lines, self.redactor)

    async def aclose(self, deadline_s: float) -> None:
        """Stop the server and everything in its group; idempotent, shielded."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(deadline_s):
            await self.api.aclose()
            if self.handle.returncode is None:
                await self.handle.signal_group(signal.SIGTERM)
                with anyio.move_on_after(_TERM_GRACE_S):
                    await self.handle.wait()
            await self.handle.aclose()


def read_tail(path: Path, lines: int, redactor: Redactor) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(log.tell() - 64 * 1024, 0))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return redactor.redact("\n".join(text.splitlines()[-lines:]))


def _prepare_home(home: Path, setup: ServerSetup) -> None:
    write_home_files(home, setup.files)
    home.joinpath(*LOG_FILE.parent.parts).mkdir(mode=0o700, parents=True, exist_ok=True)


async def start_server(
    launcher: ProcessLauncher,
    config: OpencodeConfig,
    setup_for: Callable[[int], ServerSetup],
    *,
    home: Path,
    cli_home: PurePosixPath,
) -> OpencodeServer:
    """Start a server and wait until it is healthy (see the module docstring).

    Raises ``ExecutableNotFound`` (no binary), ``AgentFailed`` (did not get healthy), or
    what the launcher raises. Cancellation kills the half-started server and propagates.
    """
    deadline = anyio.current_time() + config.start_timeout_s
    log = home.joinpath(*LOG_FILE.parts)
    problem, tail = "not started", ""
    for _attempt in range(max(config.start_attempts, 1)):
        port = config.port or free_port(config.listen_host)
        setup = setup_for(port)
        await anyio.to_thread.run_sync(_prepare_home, home, setup)
        handle = await launcher.start(setup.argv, env=setup.env, cwd=str(cli_home))
        host = config.connect_host or (
            "127.0.0.1" if config.listen_host in ("0.0.0.0", "") else config.listen_host
        )
        api = OpencodeApi(
            f"http://{host}:{config.connect_port or port}",
            username=USERNAME,
            password=setup.env["OPENCODE_SERVER_PASSWORD"],
            timeout_s=config.request_timeout_s,
        )
        server = OpencodeServer(handle, api, setup, log)
        healthy = False
        try:
            healthy = await _wait_healthy(server, config, deadline)
            # Read before the clean-up below kills it (which would set 137).
            code, tail = handle.returncode, server.log_tail(20)
        finally:
            if not healthy:
                await server.aclose(config.close_deadline_s)
        if healthy:
            return server
        if code == 127:
            raise ExecutableNotFound(
                "opencode executable not found",
                executable=config.binary,
                path=setup.env.get("PATH"),
                log_tail=tail,
            )
        problem = (
            f"exited with code {code}"
            if code is not None
            else f"not healthy within {config.start_timeout_s:g}s"
        )
        if code is None or anyio.current_time() >= deadline:
            break
    raise AgentFailed(f"opencode server did not start: {problem}", log_tail=tail)


async def _wait_healthy(server: OpencodeServer, config: OpencodeConfig, deadline: float) -> bool:
    while anyio.current_time() < deadline:
        if server.handle.returncode is not None:
            return False
        if await server.api.healthy(config.health_timeout_s):
            return True
        await anyio.sleep(_POLL_S)
    return False
