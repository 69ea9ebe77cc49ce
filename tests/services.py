"""Ephemeral real services for tests: Redis, PostgreSQL, Docker and a tiny local test image.

Pure test support code; the pytest fixtures in ``tests/conftest.py`` wrap these helpers.

The one rule (see :func:`service_unavailable`): a test that needs a service never silently
skips in CI. With ``CI`` set to a truthy value a missing service *fails* the test with a
message saying what is missing and how to fix it; outside CI it skips with the same message.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import docker
import docker.errors
import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_TEST_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-test-image"
TEST_IMAGE_TAG = os.environ.get("CODEYARD_TEST_IMAGE", "codeyard-test/busybox:latest")
SETUP_HINT = "run `scripts/dev setup` (installs the missing packages and starts dockerd)"

_FALSY = {"", "0", "false", "no", "off", "n", "f"}


def ci_enabled() -> bool:
    """True when the ``CI`` environment variable holds a truthy value."""
    return os.environ.get("CI", "").strip().lower() not in _FALSY


def service_unavailable(name: str, reason: str, fix: str = SETUP_HINT) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) a test whose service is unavailable.

    The single implementation of the rule: in CI a missing service is a broken pipeline,
    never a silent skip.
    """
    message = f"{name} unavailable: {reason}. Fix: {fix}."
    if ci_enabled():
        pytest.fail(f"{message} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if it loses a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class ServiceStartError(Exception):
    """A service binary exists but the service did not come up."""


# --- Redis ---------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """An ephemeral ``redis-server`` without persistence on a free local port."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    started_in: float

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _stop_process(self.process, signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def start_redis(binary: str, timeout: float = 15.0, attempts: int = 3) -> RedisServer:
    last_error = "not started"
    for _ in range(attempts):
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codeyard-redis-"))
        port = free_port()
        logfile = workdir / "redis.log"
        with logfile.open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = RedisServer(port, workdir, proc, 0.0)
        client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            deadline = began + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        server.started_in = time.monotonic() - began
                        return server
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        last_error = f"exit code {proc.poll()}; log:\n{_tail(logfile)}"
        server.stop()
    raise ServiceStartError(f"redis-server did not answer PING ({last_error})")


# --- PostgreSQL ----------------------------------------------------------------------------


def _pg_version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin``, else the folder of ``initdb`` on PATH."""
    candidates = [
        p.parent
        for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (p.parent / "postgres").exists()
    ]
    if candidates:
        return max(candidates, key=_pg_version_key)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    """An ephemeral PostgreSQL cluster (trust auth, no durability) on a free local port.

    Runs as the ``postgres`` OS user when the tests run as root (initdb refuses root).
    """

    bindir: Path
    port: int
    workdir: Path
    user: str | None
    process: subprocess.Popen[bytes]
    started_in: float = 0.0
    superuser: str = "postgres"
    _logfile: Path = field(default=Path("/dev/null"))

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "sock"

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command through psql as the superuser and return its output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "--no-psqlrc",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        if result.returncode != 0:
            raise ServiceStartError(f"psql failed on {sql!r}: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, template: str | None = None) -> None:
        clause = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM waits for clients to disconnect).
        _stop_process(self.process, signal.SIGINT)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _unprivileged_user() -> str | None:
    """The OS user to run PostgreSQL as: ``postgres`` when root, else nobody to switch to."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceStartError(
            "running as root and no `postgres` OS user exists (initdb refuses to run as root);"
            " install the postgresql package or run the tests as an unprivileged user"
        ) from None
    return "postgres"


def _run_as(
    user: str | None,
    argv: list[str],
    cwd: Path,
    stdout: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    if user is None:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    entry = pwd.getpwnam(user)
    env = {**os.environ, "HOME": str(cwd), "USER": user, "LOGNAME": user}
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        env=env,
    )


def start_postgres(bindir: Path, timeout: float = 30.0, attempts: int = 3) -> PostgresServer:
    began = time.monotonic()
    user = _unprivileged_user()
    # Directly under /tmp (not pytest's 0700 root-owned tmp tree) so the postgres user can
    # reach it.
    workdir = Path(tempfile.mkdtemp(prefix="codeyard-pg-"))
    data = workdir / "data"
    (workdir / "sock").mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (workdir, workdir / "sock"):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    init_log = workdir / "initdb.log"
    with init_log.open("wb") as log:
        initdb = _run_as(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=workdir,
            stdout=log,
        )
        rc = initdb.wait(timeout=120)
    if rc != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServiceStartError(f"initdb exited with {rc}:\n{_tail(init_log)}")

    last_error = "not started"
    for _ in range(attempts):
        port = free_port()
        logfile = workdir / f"postgres-{port}.log"
        with logfile.open("wb") as log:
            if user is not None:
                os.chown(logfile, pwd.getpwnam(user).pw_uid, -1)
            proc = _run_as(
                user,
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(workdir / "sock"),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                cwd=workdir,
                stdout=log,
            )
        server = PostgresServer(bindir, port, workdir, user, proc, _logfile=logfile)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            ready = subprocess.run(
                [
                    str(bindir / "pg_isready"),
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-t",
                    "1",
                ],
                check=False,
            )
            if ready.returncode == 0:
                server.started_in = time.monotonic() - began
                return server
            time.sleep(0.05)
        last_error = f"exit code {proc.poll()}; log:\n{_tail(logfile)}"
        _stop_process(proc, signal.SIGINT)
    shutil.rmtree(workdir, ignore_errors=True)
    raise ServiceStartError(f"postgres did not accept connections ({last_error})")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# --- Docker --------------------------------------------------------------------------------


def docker_client() -> docker.DockerClient:
    """A client sized for concurrent use (docker-py's default pool of 10 breaks under load)."""
    client = docker.from_env(max_pool_size=32)
    try:
        client.ping()
    except Exception:
        client.close()
        raise
    return client


def ensure_test_image(client: docker.DockerClient, tag: str = TEST_IMAGE_TAG) -> str:
    """Return ``tag``, building it with ``scripts/build-test-image`` when it is missing."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        result = subprocess.run(
            [str(BUILD_TEST_IMAGE_SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "CODEYARD_TEST_IMAGE": tag},
        )
        if result.returncode != 0:
            raise ServiceStartError(
                f"scripts/build-test-image exited with {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            ) from None
        client.images.get(tag)
    return tag
