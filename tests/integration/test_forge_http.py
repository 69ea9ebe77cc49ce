"""The forge over git smart HTTP: real ``git`` clients clone, push and race through
ForgeServer, authenticated by a credential helper that reads the token from the
environment (never from the URL or an argument)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from codeyard.adapters.forge import ForgeServer, LocalForge
from codeyard.adapters.memory.clock import ManualClock
from codeyard.domain.code_host import PullRequestState

pytestmark = pytest.mark.anyio

REPO = "sample"
#: The credential helper a worker uses: git asks it after a 401 challenge.
HELPER = "!f() { echo username=x; echo password=$FORGE_TOKEN; }; f"


@dataclass
class Client:
    """A git user on this machine with its own HOME and the forge token in its env."""

    home: Path
    token: str

    async def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "FORGE_TOKEN": self.token,
            "GIT_AUTHOR_NAME": "worker",
            "GIT_AUTHOR_EMAIL": "worker@example.invalid",
            "GIT_COMMITTER_NAME": "worker",
            "GIT_COMMITTER_EMAIL": "worker@example.invalid",
        }
        done = await anyio.run_process(
            ["git", "-c", f"credential.helper={HELPER}", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        out = done.stdout.decode() + done.stderr.decode()
        if check and done.returncode != 0:
            pytest.fail(f"git {' '.join(args)} failed ({done.returncode}): {out}")
        if not check and done.returncode == 0:
            pytest.fail(f"git {' '.join(args)} succeeded but should not have: {out}")
        return out

    async def commit(self, work: Path, files: dict[str, str | bytes], message: str) -> str:
        for name, content in files.items():
            path = work / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        await self.git("add", "--all", cwd=work)
        await self.git("commit", "--quiet", "-m", message, cwd=work)
        return (await self.git("rev-parse", "HEAD", cwd=work)).strip()


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
async def forge(tmp_path: Path) -> LocalForge:
    forge = LocalForge(tmp_path / "forge", clock=ManualClock())
    await forge.create_repo(REPO, files={"README.md": "# sample\n", "app.py": "VALUE = 1\n"})
    return forge


@pytest.fixture
async def server(forge: LocalForge, token: str) -> AsyncIterator[ForgeServer]:
    async with ForgeServer(forge, host="127.0.0.1", token=token) as running:
        yield running


def client(tmp_path: Path, name: str, token: str) -> Client:
    home = tmp_path / f"home-{name}"
    home.mkdir()
    return Client(home, token)


async def test_clone_push_then_pull_request_merges(
    tmp_path: Path, forge: LocalForge, server: ForgeServer, token: str
) -> None:
    worker = client(tmp_path, "worker", token)
    work = tmp_path / "work"
    url = server.repo_url(REPO)
    assert url == f"{server.url}/{REPO}.git"
    assert token not in url
    await worker.git("clone", "--quiet", url, str(work))
    assert (work / "app.py").read_text() == "VALUE = 1\n"

    await worker.git("checkout", "--quiet", "-b", "task/http", cwd=work)
    # Larger than git's 1 MiB post buffer: the push goes out chunked and must stream.
    blob = secrets.token_bytes(3 * 1024 * 1024)
    sha = await worker.commit(work, {"app.py": "VALUE = 2\n", "data.bin": blob}, "Change")
    await worker.git("push", "--quiet", "origin", "task/http", cwd=work)
    assert await forge.branch_sha(REPO, "task/http") == sha

    pr = await forge.open_pull_request(REPO, head="task/http", base="main", title="Via HTTP")
    assert pr.head_sha == sha
    merged = await forge.merge(REPO, pr.number)
    assert merged.state is PullRequestState.MERGED

    await worker.git("fetch", "--quiet", "origin", cwd=work)
    remote_main = (await worker.git("rev-parse", "origin/main", cwd=work)).strip()
    assert remote_main == merged.merge_sha
    shown = await worker.git("show", "origin/main:app.py", cwd=work)
    assert shown == "VALUE = 2\n"


async def test_wrong_or_missing_token_is_refused(
    tmp_path: Path, forge: LocalForge, server: ForgeServer, token: str
) -> None:
    url = server.repo_url(REPO)
    intruder = client(tmp_path, "intruder", "not-the-token")
    out = await intruder.git("clone", "--quiet", url, str(tmp_path / "nope"), check=False)
    assert "Authentication failed" in out or "401" in out
    assert token not in out

    # A good clone whose credentials then go wrong cannot push.
    worker = client(tmp_path, "worker", token)
    work = tmp_path / "work"
    await worker.git("clone", "--quiet", url, str(work))
    before = await forge.branch_sha(REPO, "main")
    await worker.commit(work, {"app.py": "VALUE = 'evil'\n"}, "Evil")
    worker.token = "wrong"
    await worker.git("push", "--quiet", "origin", "main", cwd=work, check=False)
    assert await forge.branch_sha(REPO, "main") == before

    async with httpx.AsyncClient(base_url=server.url) as http:
        bare = await http.get(f"/{REPO}.git/info/refs", params={"service": "git-upload-pack"})
        assert bare.status_code == 401
        assert bare.headers["www-authenticate"].startswith("Basic")
        hidden = await http.get("/.forge/home", auth=("x", token))
        assert hidden.status_code == 404
        advert = await http.get(
            f"/{REPO}.git/info/refs", params={"service": "git-receive-pack"}, auth=("x", token)
        )
        assert advert.status_code == 200
        assert advert.headers["content-type"] == "application/x-git-receive-pack-advertisement"
    assert token not in repr(server)


async def test_racing_pushes_to_one_branch_reject_the_second(
    tmp_path: Path, forge: LocalForge, server: ForgeServer, token: str
) -> None:
    url = server.repo_url(REPO)
    alice, bob = client(tmp_path, "alice", token), client(tmp_path, "bob", token)
    alice_work, bob_work = tmp_path / "alice", tmp_path / "bob"
    await alice.git("clone", "--quiet", url, str(alice_work))
    await bob.git("clone", "--quiet", url, str(bob_work))

    alice_sha = await alice.commit(alice_work, {"alice.txt": "a\n"}, "Alice")
    await bob.commit(bob_work, {"bob.txt": "b\n"}, "Bob")
    await alice.git("push", "--quiet", "origin", "main", cwd=alice_work)
    out = await bob.git("push", "origin", "main", cwd=bob_work, check=False)
    assert "rejected" in out
    assert await forge.branch_sha(REPO, "main") == alice_sha

    # As with any git remote: pull with rebase, then the push goes through.
    await bob.git("pull", "--quiet", "--rebase", "origin", "main", cwd=bob_work)
    await bob.git("push", "--quiet", "origin", "main", cwd=bob_work)
    assert await forge.read_file(REPO, "main", "alice.txt") == "a\n"
    assert await forge.read_file(REPO, "main", "bob.txt") == "b\n"


async def test_unknown_repository_is_not_found(
    tmp_path: Path, server: ForgeServer, token: str
) -> None:
    worker = client(tmp_path, "worker", token)
    out = await worker.git(
        "clone", "--quiet", server.repo_url("missing"), str(tmp_path / "m"), check=False
    )
    assert "not found" in out.lower() or "404" in out
