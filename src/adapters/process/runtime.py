"""A ContainerRuntime WITHOUT ISOLATION: "containers" are local process groups in temp dirs.

For machines without Docker. See :class:`LocalProcessRuntime` for what is and is not real.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread

from codeyard.adapters.container_labels import container_labels
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.process.captured import run_captured
from codeyard.adapters.process.local import exit_code
from codeyard.adapters.process.reaper import kill_run
from codeyard.adapters.process.workspace import drop_workspace, make_workspace
from codeyard.domain.container import (
    LABEL_PREFIX,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    ExecResult,
    exit_reason,
)
from codeyard.domain.errors import (
    AlreadyExists,
    Conflict,
    ContainerNotFound,
    ImageNotFound,
    RuntimeNotAvailable,
)
from codeyard.domain.worker import NetworkPolicy
from codeyard.ports.clock import Clock

#: Every container of this runtime carries ``LABEL_ISOLATION=none``.
LABEL_ISOLATION = LABEL_PREFIX + "isolation"
RUNTIME_NAME = "local"
_LOOPBACK = "127.0.0.1"
_POLL_MIN_S, _POLL_MAX_S = 0.002, 0.05
#: How long start waits for a network=none process to enter its own namespace.
_NETNS_WAIT_S = 5.0


@dataclass
class _Box:
    id: str
    name: str
    spec: ContainerSpec
    labels: dict[str, str]
    root: Path
    state: ContainerState = ContainerState.CREATED
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    process: subprocess.Popen[bytes] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False

    @property
    def workspace(self) -> Path:
        return self.root / "work"

    @property
    def log(self) -> Path:
        return self.root / "main.log"


class LocalProcessRuntime:
    """:class:`~codeyard.ports.container_runtime.ContainerRuntime` with NO ISOLATION.

    A "container" is a temp directory (``work/`` = its workspace and ``$HOME``: empty, or
    with ``repo`` a detached git worktree of that repository's HEAD; ``main.log`` = the
    main process's combined output) and a process group on THIS machine,
    run as the calling user with the caller's filesystem: absolute paths are host paths.
    Every container is labelled ``dev.codeyard.isolation=none``. Not applied: ``user``,
    resource limits, ``mounts``, ``read_only_root``, capabilities, and the network policy
    except ``NONE``, which runs the main process in a new network namespace (``unshare
    --net``, exec joins it with ``nsenter``; root only, else ``RuntimeNotAvailable``).
    A running container reports the IP ``127.0.0.1`` (it shares the host's network).

    Like a container, it ends when its main process ends: the rest of its process group is
    killed then. ``stop`` sends SIGTERM to the group, then SIGKILLs the group and every
    descendant (:func:`~codeyard.adapters.process.reaper.kill_run`) after the timeout.
    ``images``: the image names accepted (``None``: any; the image is only recorded).
    ``spec.runtime`` may only be ``local``. ``reason`` is as Docker's adapter reports it
    (``stopped`` after our ``stop``/``remove``; no OOM killer applies here).
    """

    def __init__(
        self,
        *,
        owner: str,
        clock: Clock | None = None,
        images: Collection[str] | None = None,
        base_dir: str | None = None,
        repo: str | None = None,
    ) -> None:
        self._owner = owner
        self._clock = clock or SystemClock()
        self._images = None if images is None else frozenset(images)
        self._base_dir = base_dir
        self._repo = None if repo is None else Path(repo)
        self._boxes: dict[str, _Box] = {}  # insertion order = creation order

    # --- lifecycle -----------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        await anyio.lowlevel.checkpoint()
        if spec.runtime not in (None, RUNTIME_NAME):
            raise RuntimeNotAvailable(
                "container runtime not offered", runtime=spec.runtime, available=[RUNTIME_NAME]
            )
        if spec.network is NetworkPolicy.NONE and not _can_unshare():
            raise RuntimeNotAvailable(
                "network=none needs a network namespace: root and util-linux unshare/nsenter",
                runtime=RUNTIME_NAME,
                network=spec.network.value,
            )
        if self._images is not None and spec.image not in self._images:
            raise ImageNotFound("no such image", image=spec.image)
        cid = secrets.token_hex(32)
        name = spec.name or f"codeyard-{cid[:12]}"
        if any(b.name == name for b in self._boxes.values()):
            raise AlreadyExists("container name already in use", name=name)
        labels = container_labels(spec, owner=self._owner, now=self._clock.now())
        labels[LABEL_ISOLATION] = "none"
        root = Path(tempfile.mkdtemp(prefix=f"codeyard-{cid[:12]}-", dir=self._base_dir))
        box = _Box(id=cid, name=name, spec=spec, labels=labels, root=root)
        self._boxes[cid] = box  # before any await: holds the name against a concurrent create
        try:
            await make_workspace(box.workspace, self._repo)
        except BaseException:
            self._boxes.pop(cid, None)
            await drop_workspace(root, box.workspace, self._repo)
            raise
        return self._info(box)

    async def start(self, container_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        if box.state is ContainerState.RUNNING and not box.done.is_set():
            return
        argv = [*(box.spec.entrypoint or ()), *box.spec.command] or ["sh"]
        if box.spec.network is NetworkPolicy.NONE:
            argv = ["unshare", "--net", "--", *argv]
        box.done = threading.Event()
        box.stopped, box.exit_code, box.finished_at = False, None, None
        with box.log.open("ab") as log:
            try:
                box.process = subprocess.Popen(  # noqa: ASYNC220 - fork+exec, no waiting
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=box.spec.workdir or box.workspace,
                    env=self._env(box, None),
                    start_new_session=True,
                )
            except OSError as exc:
                # As under Docker with its init: the start succeeds, the init cannot exec
                # the command and the container exits 127 (missing) or 126 (not runnable).
                log.write(f"cannot exec {argv[0]!r}: {exc}\n".encode())
                box.started_at = box.finished_at = self._clock.now()
                box.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
                box.state = ContainerState.EXITED
                box.done.set()
                return
        box.state, box.started_at = ContainerState.RUNNING, self._clock.now()
        threading.Thread(target=self._reap, args=(box, box.process), daemon=True).start()
        if box.spec.network is NetworkPolicy.NONE:
            # `unshare` enters its namespace a moment after the fork: an exec joining the
            # pid's namespace before then would land in the host's (seen in a full run).
            with anyio.move_on_after(_NETNS_WAIT_S):
                while not box.done.is_set() and not _own_netns(box.process.pid):  # noqa: ASYNC110 - /proc offers no wakeup
                    await anyio.sleep(_POLL_MIN_S)

    def _reap(self, box: _Box, process: subprocess.Popen[bytes]) -> None:
        """Thread: record the main process's end, then end the rest of its group."""
        code = process.wait()
        box.exit_code, box.finished_at = exit_code(code), self._clock.now()
        box.state = ContainerState.EXITED
        box.done.set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def wait(self, container_id: str, *, timeout_s: float | None = None) -> int:
        box = self._get(container_id)
        delay = _POLL_MIN_S
        with anyio.fail_after(timeout_s):
            # Polls a threading.Event set by the reaper thread: no loop-side wakeup exists.
            while box.state is ContainerState.RUNNING and not box.done.is_set():
                await anyio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX_S)
        await anyio.lowlevel.checkpoint()
        return box.exit_code or 0

    async def stop(self, container_id: str, *, timeout_s: float = 10.0) -> None:
        box = self._get(container_id)
        process = box.process
        if process is None or box.done.is_set():
            await anyio.lowlevel.checkpoint()
            return
        box.stopped = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with anyio.move_on_after(timeout_s):
            await self.wait(box.id)
        with anyio.CancelScope(shield=True):
            await kill_run(process.pid, leader=process.pid)
            with anyio.move_on_after(5):
                await self.wait(box.id)

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        await anyio.lowlevel.checkpoint()
        box = self._find(container_id)
        if box is None:
            return
        if box.state is ContainerState.RUNNING and not box.done.is_set():
            if not force:
                raise Conflict("cannot remove a running container", container_id=container_id)
            await self.stop(box.id, timeout_s=0)
        self._boxes.pop(box.id, None)
        await drop_workspace(box.root, box.workspace, self._repo)

    # --- processes -----------------------------------------------------------------------

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> ExecResult:
        box = self._get(container_id)
        process = box.process
        if process is None or box.done.is_set():
            raise Conflict("container is not running", container_id=container_id)
        merged = self._env(box, env)
        if not argv or shutil.which(argv[0], path=merged.get("PATH")) is None:
            program = argv[0] if argv else ""
            return ExecResult(exit_code=127, stderr=f"exec: {program!r}: not found\n")
        command = list(argv)
        if box.spec.network is NetworkPolicy.NONE:
            command = ["nsenter", f"--target={process.pid}", "--net", "--", *command]
        return await run_captured(
            command, cwd=workdir or box.spec.workdir or str(box.workspace), env=merged
        )

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        box = self._get(container_id)
        data = await anyio.to_thread.run_sync(_read, box.log)
        if tail is None:
            return data
        lines = data.splitlines(keepends=True)
        return "".join(lines[-tail:]) if tail > 0 else ""

    # --- queries -------------------------------------------------------------------------

    async def inspect(self, container_id: str) -> ContainerInfo:
        await anyio.lowlevel.checkpoint()
        return self._info(self._get(container_id))

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerInfo]:
        await anyio.lowlevel.checkpoint()
        wanted = dict(labels or {}).items()
        return [self._info(b) for b in list(self._boxes.values()) if wanted <= b.labels.items()]

    # --- internals -----------------------------------------------------------------------

    def _find(self, container_id: str) -> _Box | None:
        box = self._boxes.get(container_id)
        if box is None:
            box = next((b for b in self._boxes.values() if b.name == container_id), None)
        return box

    def _get(self, container_id: str) -> _Box:
        box = self._find(container_id)
        if box is None:
            raise ContainerNotFound("no such container", container_id=container_id)
        return box

    def _env(self, box: _Box, extra: Mapping[str, str] | None) -> dict[str, str]:
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(box.workspace),
            "HOSTNAME": box.name,
        }
        return {**base, **box.spec.env, **(extra or {})}

    def _info(self, box: _Box) -> ContainerInfo:
        # Read once: the reaper thread may end the container meanwhile.
        done = box.done.is_set()
        running = box.state is ContainerState.RUNNING and not done
        state = ContainerState.EXITED if done else box.state
        code = box.exit_code if done else None
        networked = box.spec.network is not NetworkPolicy.NONE
        return ContainerInfo(
            id=box.id,
            name=box.name,
            image=box.spec.image,
            state=state,
            labels=dict(box.labels),
            exit_code=code,
            reason=None
            if code is None
            else exit_reason(code, oom_killed=False, stopped=box.stopped),
            ip=_LOOPBACK if running and networked else None,
            started_at=box.started_at,
            finished_at=box.finished_at if done else None,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _own_netns(pid: int) -> bool:
    """Whether ``pid`` runs in a network namespace other than ours (False if unknown)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return False


def _can_unshare() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and shutil.which("nsenter") is not None
    )
