"""GitWorkspace: the git flow around an agent turn inside a worker (issue #6).

Before the turn :meth:`GitWorkspace.prepare` gives the workdir a clean checkout of the task
branch (a reused worker forgets what an earlier turn left behind); after a successful turn
:meth:`GitWorkspace.finish` commits every change and pushes, rebasing onto the remote branch
when it moved. :class:`TurnGit` ties that to the wrapper's event stream. Decisions:

* **The git CLI**, not a library: it is what the agents themselves use in the workdir, and
  the credential helper protocol comes with it. ``GIT_TERMINAL_PROMPT=0`` so a missing
  credential fails instead of waiting for a terminal; ``GIT_CONFIG_NOSYSTEM=1`` and
  ``LC_ALL=C`` so messages and behaviour do not depend on the image.
* **Credentials**: with ``step.token_env`` every command resets ``credential.helper`` and
  sets a shell helper that *names* the variable; git expands it in its own environment, so
  the token is in no argument, URL, event or log. Captured stderr is redacted anyway.
* **Files the worker owns** (``keep``: the instruction file the wrapper wrote) survive every
  reset and are never committed: they are listed in ``.git/info/exclude``, their content is
  restored after a checkout, and they are unstaged before the commit in case the repository
  tracks a file of the same name.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import anyio

from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.code_host import GitFailed, GitReport, GitStep
from codeyard.domain.events import AgentEvent, LifecyclePayload, ResultPayload

#: Push attempts when the remote branch moves between our pull and our push.
PUSH_TRIES = 3
_STDERR_TAIL = 2000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: How git says the remote branch moved. Not "[remote rejected]": that is a hook refusing.
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first")
_REDACTED = "[REDACTED]"


class GitWorkspace:
    """The git repository in one worker's ``workdir`` (see the module docstring).

    ``env`` is the worker's environment: the token named by a step's ``token_env`` is read
    from it (by git's credential helper, never by this class' argv). ``keep`` names files
    relative to ``workdir`` that the worker wrote and git must leave alone.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        keep: Iterable[str] = (),
        git: str = "git",
    ) -> None:
        self._workdir = workdir
        self._env = dict(env)
        self._keep = tuple(keep)
        self._git_binary = git

    def with_env(self, extra: Mapping[str, str]) -> GitWorkspace:
        """The same workspace with ``extra`` over its environment (a turn's own env: how a
        git token reaches one turn without being part of the worker's spec)."""
        if not extra:
            return self
        return GitWorkspace(
            self._workdir, env={**self._env, **extra}, keep=self._keep, git=self._git_binary
        )

    async def prepare(self, step: GitStep) -> None:
        """Check out ``step.branch`` clean: its remote state, else new from ``origin/<base>``.

        Raises :class:`GitFailed` (``step``: ``fetch``, ``checkout``...).
        """
        saved = await anyio.to_thread.run_sync(self._read_kept)
        git_dir = self._workdir / ".git"
        if not git_dir.exists():
            # init + fetch rather than clone: the workdir already holds the wrapper's files.
            await anyio.to_thread.run_sync(lambda: self._workdir.mkdir(parents=True, exist_ok=True))
            await self._git(step, "init", "-q", phase="init")
            await self._git(step, "remote", "add", "origin", step.repo_url, phase="init")
        else:
            # A git killed mid-command (a cancelled turn) leaves its lock; nothing else runs
            # git here between turns, so it is stale.
            await anyio.to_thread.run_sync(lambda: (git_dir / "index.lock").unlink(missing_ok=True))
            if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
                # A predecessor died mid-rebase: leave that state before anything else.
                await self._git(step, "rebase", "--abort", phase="reset", check=False)
            await self._git(step, "remote", "set-url", "origin", step.repo_url, phase="init")
        await anyio.to_thread.run_sync(self._exclude_kept)
        await self._git(step, "fetch", "--prune", "origin", phase="fetch")
        start = await self._upstream(step)
        if start is None:
            raise GitFailed(
                "the base branch is not on the remote",
                step="checkout",
                base=step.base,
                branch=step.branch,
            )
        await self._git(
            step, "checkout", "-q", "-f", "--no-track", "-B", step.branch, start, phase="checkout"
        )
        await self._git(step, "reset", "-q", "--hard", start, phase="reset")
        await self._git(step, "clean", "-ffdq", phase="reset")  # not -x: excluded files stay
        await anyio.to_thread.run_sync(self._restore_kept, saved)

    async def finish(self, step: GitStep) -> GitReport:
        """Commit every change with ``step.commit_message``; push when ``step.push``.

        A push rejected because the remote branch moved is retried after
        ``git pull --rebase`` (at most :data:`PUSH_TRIES` pushes); a rebase conflict aborts
        the rebase and raises :class:`GitFailed` (``step="rebase"``, ``files``).
        """
        await self._git(step, "add", "-A", phase="commit")
        if self._keep:
            await self._git(step, "reset", "-q", "--", *self._keep, phase="commit", check=False)
        staged = await self._git(step, "diff", "--cached", "--quiet", phase="commit", check=False)
        if staged.returncode != 0:
            await self._git(
                step, "commit", "-q", "--no-verify", "-m", step.commit_message, phase="commit"
            )
        report = GitReport(branch=step.branch, base=step.base)
        rebased = False
        for attempt in range(1, PUSH_TRIES + 1):
            upstream = await self._upstream(step)
            commits = await self._commits(step, upstream)
            head = await self._out(step, "rev-parse", "HEAD", phase="commit")
            report = report.model_copy(
                update={"commits": commits, "head_sha": head, "rebased": rebased}
            )
            if not commits or not step.push:
                return report
            push = await self._git(
                step,
                *("push", "--no-verify", "-q", "origin", f"HEAD:refs/heads/{step.branch}"),
                phase="push",
                check=False,
            )
            if push.returncode == 0:
                return report.model_copy(update={"pushed": True})
            stderr = push.stderr.decode(errors="replace")
            if attempt == PUSH_TRIES or not any(mark in stderr for mark in _REJECTED):
                raise self._failed(step, "push", push.returncode, stderr, tries=attempt)
            await self._pull_rebase(step)
            rebased = True
        raise AssertionError("unreachable")  # pragma: no cover

    # --- internals -------------------------------------------------------------------------

    async def _pull_rebase(self, step: GitStep) -> None:
        pull = await self._git(
            step,
            *("pull", "-q", "--rebase", "--autostash", "--no-verify", "origin", step.branch),
            phase="rebase",
            check=False,
        )
        if pull.returncode == 0:
            return
        conflicted = await self._out(
            step, "diff", "--name-only", "--diff-filter=U", phase="rebase", check=False
        )
        await self._git(step, "rebase", "--abort", phase="rebase", check=False)
        raise self._failed(
            step,
            "rebase",
            pull.returncode,
            pull.stderr.decode(errors="replace"),
            files=sorted(filter(None, conflicted.splitlines())),
        )

    async def _upstream(self, step: GitStep) -> str | None:
        """``origin/<branch>`` when the remote has it, else ``origin/<base>`` (or None)."""
        for name in (step.branch, step.base):
            ref = f"refs/remotes/origin/{name}"
            found = await self._git(
                step, "rev-parse", "-q", "--verify", ref, phase="checkout", check=False
            )
            if found.returncode == 0:
                return ref
        return None

    async def _commits(self, step: GitStep, upstream: str | None) -> tuple[str, ...]:
        span = f"{upstream}..HEAD" if upstream else "HEAD"
        listed = await self._out(step, "rev-list", "--reverse", span, phase="commit")
        return tuple(listed.split())

    async def _out(self, step: GitStep, *args: str, phase: str, check: bool = True) -> str:
        done = await self._git(step, *args, phase=phase, check=check)
        return done.stdout.decode(errors="replace").strip()

    async def _git(
        self, step: GitStep, *args: str, phase: str, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git args`` in the workdir; a failure raises GitFailed(step=phase) if ``check``."""
        argv = [self._git_binary, "-c", "commit.gpgsign=false", *self._credential_args(step)]
        env = {
            **self._env,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
            "GIT_AUTHOR_NAME": step.author_name,
            "GIT_AUTHOR_EMAIL": step.author_email,
            "GIT_COMMITTER_NAME": step.author_name,
            "GIT_COMMITTER_EMAIL": step.author_email,
        }
        try:
            done = await anyio.run_process(
                [*argv, *args],
                cwd=self._workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except OSError as exc:  # no git binary, workdir gone...
            raise GitFailed("git could not be started", step=phase, detail=str(exc)) from exc
        if check and done.returncode != 0:
            raise self._failed(step, phase, done.returncode, done.stderr.decode(errors="replace"))
        return done

    def _credential_args(self, step: GitStep) -> list[str]:
        if step.token_env is None:
            return []
        if not _ENV_NAME.match(step.token_env):
            # It is pasted into a shell snippet: only a plain variable name is safe.
            raise GitFailed("token_env is not a variable name", step="credentials")
        if not self._env.get(step.token_env):
            raise GitFailed(
                "the token variable is not set", step="credentials", token_env=step.token_env
            )
        helper = f'!f() {{ echo username=x-access-token; echo "password=${step.token_env}"; }}; f'
        return [
            *("-c", "credential.helper="),
            *("-c", f"credential.helper={helper}"),
            *("-c", "credential.useHttpPath=false"),
        ]

    def _failed(
        self, step: GitStep, phase: str, exit_code: int, stderr: str, **fields: object
    ) -> GitFailed:
        token = self._env.get(step.token_env) if step.token_env else None
        if token:
            stderr = stderr.replace(token, _REDACTED)
        return GitFailed(
            f"git failed at {phase}",
            step=phase,
            exit_code=exit_code,
            stderr=stderr[-_STDERR_TAIL:].strip(),
            **fields,
        )

    # --- files the worker owns ---------------------------------------------------------------

    def _read_kept(self) -> dict[str, bytes]:
        found = {}
        for name in self._keep:
            path = self._workdir / name
            if path.is_file():
                found[name] = path.read_bytes()
        return found

    def _restore_kept(self, saved: Mapping[str, bytes]) -> None:
        for name, content in saved.items():
            path = self._workdir / name
            if not path.is_file() or path.read_bytes() != content:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)

    def _exclude_kept(self) -> None:
        if not self._keep:
            return
        exclude = self._workdir / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        missing = [f"/{name}" for name in self._keep if f"/{name}" not in lines]
        if missing:
            exclude.write_text("\n".join([*lines, *missing]) + "\n")


class TurnGit:
    """The git flow of one wrapper turn around the agent's events.

    :meth:`prepare` before the agent runs; :meth:`hold` keeps the agent's result event back
    (the wrapper publishes every other event as it comes); :meth:`close` runs
    :meth:`GitWorkspace.finish` when the result is a success and returns the events to
    publish last: a ``git`` lifecycle event (detail: the :class:`GitReport`), then the result
    (an ``error`` result, ``terminal_reason="git_failed"``, when the git step failed). Both
    continue the run's ``seq`` where the held result stood, so it stays gap-free and the
    result stays the run's last event.
    """

    def __init__(self, workspace: GitWorkspace, step: GitStep) -> None:
        self._workspace = workspace
        self._step = step
        self.held: AgentEvent | None = None

    async def prepare(self) -> None:
        await self._workspace.prepare(self._step)

    def hold(self, event: AgentEvent) -> bool:
        """True when ``event`` is the result: the caller must not publish it now."""
        if isinstance(event.payload, ResultPayload):
            self.held = event
            return True
        return False

    async def close(self) -> list[AgentEvent]:
        held = self.held
        if held is None or not isinstance(held.payload, ResultPayload):
            return []
        result = held.payload.result
        report = GitReport(branch=self._step.branch, base=self._step.base)
        if result.ok:
            try:
                report = await self._workspace.finish(self._step)
            except GitFailed as exc:
                report = report.model_copy(update={"error": str(exc)})
                result = _git_failed(result, exc)
        detail = report.model_dump(mode="json")
        git_event = held.model_copy(
            update={
                "id": uuid.uuid4().hex,
                "ts": datetime.now(UTC),
                "payload": LifecyclePayload(state="git", detail=detail),
                "raw": None,
            }
        )
        final = held.model_copy(
            update={"seq": held.seq + 1, "payload": ResultPayload(result=result)}
        )
        return [git_event, final]


def _git_failed(result: AgentResult, exc: GitFailed) -> AgentResult:
    return result.model_copy(
        update={
            "status": ResultStatus.ERROR,
            "error": exc.message,
            "terminal_reason": GitFailed.code,
        }
    )
