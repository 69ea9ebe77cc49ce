"""GitWorkspace against real git and local bare repositories (file:// remotes, no network)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from codeyard.app.worker_git import GitWorkspace
from codeyard.domain.code_host import GitFailed, GitStep

pytestmark = pytest.mark.anyio

TOKEN = "ghp_codeyardSecretToken0123456789"
GIT = shutil.which("git") or "git"
ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "other",
    "GIT_AUTHOR_EMAIL": "other@example.com",
    "GIT_COMMITTER_NAME": "other",
    "GIT_COMMITTER_EMAIL": "other@example.com",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [GIT, *args], cwd=cwd, env=ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class Remote:
    """A bare repository with ``main`` holding README.md, and a second clone ("another
    worker") to move it behind the workspace's back."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "remote.git"
        self.url = self.path.as_uri()
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(self.path))
        self.other = tmp_path / "other"
        git(tmp_path, "clone", "-q", self.url, str(self.other))
        git(self.other, "checkout", "-q", "-b", "main")
        (self.other / "README.md").write_text("hello\n")
        git(self.other, "add", "-A")
        git(self.other, "commit", "-q", "-m", "initial")
        git(self.other, "push", "-q", "origin", "main")

    def sha(self, ref: str) -> str:
        return git(self.path, "rev-parse", ref)

    def has(self, ref: str) -> bool:
        done = subprocess.run(
            [GIT, "rev-parse", "-q", "--verify", ref],
            cwd=self.path,
            env=ENV,
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def files(self, ref: str) -> list[str]:
        return git(self.path, "ls-tree", "-r", "--name-only", ref).splitlines()

    def show(self, ref: str, path: str) -> str:
        return git(self.path, "show", f"{ref}:{path}")

    def push_from_other(self, branch: str, name: str, content: str) -> str:
        git(self.other, "fetch", "-q", "origin")
        start = f"origin/{branch}" if self.has(f"refs/heads/{branch}") else "origin/main"
        git(self.other, "checkout", "-q", "-B", branch, start)
        (self.other / name).write_text(content)
        git(self.other, "add", "-A")
        git(self.other, "commit", "-q", "-m", f"other: {name}")
        git(self.other, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.other, "rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def step(remote: Remote, **changes: object) -> GitStep:
    fields: dict[str, object] = {
        "repo_url": remote.url,
        "branch": "task/t1",
        "commit_message": "feat: add the thing",
        "author_name": "codeyard-bot",
        "author_email": "bot@codeyard.test",
        **changes,
    }
    return GitStep.model_validate(fields)


def workspace(workdir: Path, env: dict[str, str] | None = None) -> GitWorkspace:
    return GitWorkspace(workdir, env=env or dict(os.environ), keep=("CLAUDE.md",))


async def test_first_turn_clones_branches_from_base_commits_and_pushes(
    tmp_path: Path, remote: Remote
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "CLAUDE.md").write_text("Be brief.\n")  # written by the wrapper before any git
    ws = workspace(work)
    await ws.prepare(step(remote))
    assert git(work, "rev-parse", "--abbrev-ref", "HEAD") == "task/t1"
    assert git(work, "rev-parse", "HEAD") == remote.sha("main")
    assert (work / "README.md").read_text() == "hello\n"
    assert (work / "CLAUDE.md").read_text() == "Be brief.\n"

    (work / "feature.py").write_text("print('x')\n")
    report = await ws.finish(step(remote))

    head = remote.sha("refs/heads/task/t1")
    assert report.pushed
    assert not report.rebased
    assert report.commits == (head,)
    assert report.head_sha == head
    assert (report.branch, report.base) == ("task/t1", "main")
    assert sorted(remote.files(head)) == ["README.md", "feature.py"]  # no CLAUDE.md
    assert git(remote.path, "log", "-1", "--format=%an <%ae>|%s", head) == (
        "codeyard-bot <bot@codeyard.test>|feat: add the thing"
    )
    assert (work / "CLAUDE.md").read_text() == "Be brief.\n"


async def test_second_round_continues_the_remote_branch(tmp_path: Path, remote: Remote) -> None:
    work = tmp_path / "work"
    ws = workspace(work)
    await ws.prepare(step(remote))
    (work / "a.txt").write_text("a\n")
    await ws.finish(step(remote))
    moved = remote.push_from_other("task/t1", "b.txt", "b\n")  # a reviewer's fix-up

    await workspace(work).prepare(step(remote, commit_message="fix: review"))
    assert git(work, "rev-parse", "HEAD") == moved
    assert (work / "a.txt").read_text() == "a\n"
    assert (work / "b.txt").read_text() == "b\n"


async def test_push_race_rebases_onto_the_moved_remote_and_pushes(
    tmp_path: Path, remote: Remote
) -> None:
    work = tmp_path / "work"
    ws = workspace(work)
    await ws.prepare(step(remote))
    theirs = remote.push_from_other("task/t1", "theirs.txt", "theirs\n")
    (work / "mine.txt").write_text("mine\n")

    report = await ws.finish(step(remote))

    head = remote.sha("refs/heads/task/t1")
    assert report.pushed
    assert report.rebased
    assert report.commits == (head,)
    assert git(remote.path, "rev-parse", f"{head}~1") == theirs
    assert {"mine.txt", "theirs.txt"} <= set(remote.files(head))


async def test_rebase_conflict_fails_and_leaves_the_remote_alone(
    tmp_path: Path, remote: Remote
) -> None:
    work = tmp_path / "work"
    ws = workspace(work)
    await ws.prepare(step(remote))
    theirs = remote.push_from_other("task/t1", "README.md", "theirs\n")
    (work / "README.md").write_text("mine\n")

    with pytest.raises(GitFailed) as caught:
        await ws.finish(step(remote))

    assert caught.value.fields["step"] == "rebase"
    assert caught.value.fields["files"] == ["README.md"]
    assert remote.sha("refs/heads/task/t1") == theirs
    assert not (work / ".git" / "rebase-merge").exists()
    assert not (work / ".git" / "rebase-apply").exists()
    # The next turn starts clean from the remote branch.
    await ws.prepare(step(remote))
    assert (work / "README.md").read_text() == "theirs\n"


async def test_nothing_changed_makes_no_commit(tmp_path: Path, remote: Remote) -> None:
    work = tmp_path / "work"
    ws = workspace(work)
    await ws.prepare(step(remote))
    (work / "CLAUDE.md").write_text("instructions only\n")  # kept files are no change

    report = await ws.finish(step(remote))

    assert report.commits == ()
    assert not report.pushed
    assert report.head_sha == remote.sha("main")
    assert not remote.has("refs/heads/task/t1")


async def test_push_false_commits_without_pushing(tmp_path: Path, remote: Remote) -> None:
    work = tmp_path / "work"
    ws = workspace(work)
    await ws.prepare(step(remote, push=False))
    (work / "local.txt").write_text("x\n")
    report = await ws.finish(step(remote, push=False))
    assert len(report.commits) == 1
    assert report.head_sha == report.commits[0] == git(work, "rev-parse", "HEAD")
    assert not report.pushed
    assert not remote.has("refs/heads/task/t1")


async def test_reused_worker_starts_clean(tmp_path: Path, remote: Remote) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "CLAUDE.md").write_text("Be brief.\n")
    ws = workspace(work)
    await ws.prepare(step(remote))
    # An earlier turn that failed: nothing committed, the tree left dirty.
    (work / "README.md").write_text("half-done\n")
    (work / "scratch").mkdir()
    (work / "scratch" / "tmp.txt").write_text("junk\n")
    git(work, "add", "README.md")

    await ws.prepare(step(remote, branch="task/t2"))

    assert git(work, "rev-parse", "--abbrev-ref", "HEAD") == "task/t2"
    assert git(work, "status", "--porcelain") == ""
    assert (work / "README.md").read_text() == "hello\n"
    assert not (work / "scratch").exists()
    assert (work / "CLAUDE.md").read_text() == "Be brief.\n"  # excluded, so kept


async def test_an_instruction_file_the_repo_tracks_is_kept_and_never_committed(
    tmp_path: Path, remote: Remote
) -> None:
    remote.push_from_other("main", "CLAUDE.md", "the repo's own\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "CLAUDE.md").write_text("the worker's\n")
    ws = workspace(work)
    await ws.prepare(step(remote))
    assert (work / "CLAUDE.md").read_text() == "the worker's\n"
    (work / "new.txt").write_text("n\n")

    report = await ws.finish(step(remote))

    assert report.pushed
    assert remote.show("refs/heads/task/t1", "CLAUDE.md") == "the repo's own"
    assert (work / "CLAUDE.md").read_text() == "the worker's\n"


async def test_missing_base_branch_is_a_checkout_failure(tmp_path: Path, remote: Remote) -> None:
    with pytest.raises(GitFailed) as caught:
        await workspace(tmp_path / "work").prepare(step(remote, base="develop"))
    assert caught.value.fields["step"] == "checkout"


async def test_unreachable_remote_fails_at_fetch(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.git").as_uri()
    with pytest.raises(GitFailed) as caught:
        await workspace(tmp_path / "work").prepare(
            GitStep(repo_url=missing, branch="b", commit_message="m")
        )
    assert caught.value.fields["step"] == "fetch"
    assert caught.value.fields["exit_code"] != 0
    assert "nowhere.git" in caught.value.fields["stderr"]


# --- credentials ---------------------------------------------------------------------------


def shim(tmp_path: Path, body: str) -> tuple[dict[str, str], Path]:
    """A ``git`` first on PATH that logs its argv (one line per call) and runs ``body``."""
    bin_dir = tmp_path / "shim"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    script = bin_dir / "git"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n{body}\n')
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GH_TOKEN": TOKEN}
    return env, log


async def test_the_token_reaches_git_only_through_the_credential_helper(
    tmp_path: Path, remote: Remote
) -> None:
    env, log = shim(tmp_path, f'exec {GIT} "$@"')
    work = tmp_path / "work"
    ws = GitWorkspace(work, env=env, git="git")
    await ws.prepare(step(remote, token_env="GH_TOKEN"))
    (work / "f.txt").write_text("f\n")
    report = await ws.finish(step(remote, token_env="GH_TOKEN"))

    assert report.pushed
    calls = log.read_text().splitlines()
    assert len(calls) > 5
    assert not any(TOKEN in call for call in calls)
    helper = (
        'credential.helper=!f() { echo username=x-access-token; echo "password=$GH_TOKEN"; }; f'
    )
    assert all(f"-c credential.helper= -c {helper}" in call for call in calls)
    assert all("credential.useHttpPath=false" in call for call in calls)
    # The helper hands git the token from the environment when a server asks for it.
    filled = await anyio.run_process(
        [GIT, "-c", "credential.helper=", "-c", helper, "credential", "fill"],
        input=b"protocol=https\nhost=git.example.com\n\n",
        env={**env, "GIT_TERMINAL_PROMPT": "0", "PATH": os.environ["PATH"]},
    )
    assert "username=x-access-token" in filled.stdout.decode()
    assert f"password={TOKEN}" in filled.stdout.decode()


async def test_a_failure_never_carries_the_token(tmp_path: Path, remote: Remote) -> None:
    # A git that echoes the credential into its error output, the worst case.
    env, _ = shim(tmp_path, 'echo "fatal: bad auth for $GH_TOKEN" >&2\nexit 128')
    with pytest.raises(GitFailed) as caught:
        await GitWorkspace(tmp_path / "work", env=env).prepare(step(remote, token_env="GH_TOKEN"))
    error = caught.value
    assert error.fields["exit_code"] == 128
    assert "fatal: bad auth for [REDACTED]" in error.fields["stderr"]
    assert TOKEN not in str(error.to_dict())


async def test_a_token_variable_that_is_not_set_fails_before_git_runs(
    tmp_path: Path, remote: Remote
) -> None:
    env, log = shim(tmp_path, f'exec {GIT} "$@"')
    del env["GH_TOKEN"]
    with pytest.raises(GitFailed) as caught:
        await GitWorkspace(tmp_path / "work", env=env).prepare(step(remote, token_env="GH_TOKEN"))
    assert caught.value.fields["step"] == "credentials"
    assert not log.exists()


async def test_a_token_env_that_is_not_a_name_is_refused(tmp_path: Path, remote: Remote) -> None:
    with pytest.raises(GitFailed) as caught:
        await workspace(tmp_path / "work", {"X": "1"}).prepare(
            step(remote, token_env="X; rm -rf /")
        )
    assert caught.value.fields["step"] == "credentials"
