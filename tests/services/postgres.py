"""An ephemeral PostgreSQL cluster, and cheap per-test databases on it.

Per-test databases are the hot path (every ``postgres_db`` test creates and drops one), so:

* the cluster lives on tmpfs (``/dev/shm``) when there is room: ``CREATE DATABASE`` copies
  the template's ~8 MB of catalog files, which on this project's disk took 30-240 ms and on
  tmpfs ~10 ms;
* DDL goes through one long-lived superuser connection (:class:`AdminConnection`) instead
  of a ``psql`` process per statement (~20 ms each); see ``pg_admin``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.services.common import ServiceStartError, free_port, stop_process, tail
from tests.services.pg_admin import AdminConnection

# Use /dev/shm only with this much room: a container's default 64 MB would not do.
_MIN_SHM_FREE = 1 << 30


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
    _admin: AdminConnection | None = field(default=None, repr=False)
    #: How the server was started, for :meth:`restart`.
    argv: tuple[str, ...] = ()

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "sock"

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one SQL command as the superuser on database ``postgres`` (over one
        connection kept open until :meth:`stop`)."""
        if self._admin is None:
            self._admin = AdminConnection(self.dsn("postgres"))
        self._admin.execute(sql)

    def create_database(self, name: str, template: str | None = None) -> None:
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self, *, down_s: float = 0.0, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT: sessions are cut, what was committed is kept), ``down_s``
        seconds down, then the same server again on the same port and data folder."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        stop_process(self.process, signal.SIGINT)
        time.sleep(down_s)
        with self._logfile.open("ab") as log:
            self.process = _run_as(self.user, list(self.argv), cwd=self.workdir, stdout=log)
        if not _ready(self.bindir, self.port, self.process, time.monotonic() + timeout):
            raise ServiceStartError(f"postgres did not come back:\n{tail(self._logfile)}")

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM waits for clients to disconnect).
        stop_process(self.process, signal.SIGINT)
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


def _scratch_root() -> str | None:
    """``/dev/shm`` when it is a writable tmpfs with room to spare, else ``None`` (the
    default temporary folder). Either way a world-reachable place, unlike pytest's 0700
    root-owned tmp tree, so the postgres user can get in."""
    shm = Path("/dev/shm")
    try:
        usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
        if usable and shutil.disk_usage(shm).free >= _MIN_SHM_FREE:
            return str(shm)
    except OSError:
        pass
    return None


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


def _ready(bindir: Path, port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until the server on ``port`` accepts connections (False: exited or too late)."""
    while time.monotonic() < deadline and proc.poll() is None:
        ready = subprocess.run(
            [
                *(str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1"),
                *("-p", str(port), "-U", "postgres", "-t", "1"),
            ],
            check=False,
        )
        if ready.returncode == 0:
            return True
        time.sleep(0.05)
    return False


def start_postgres(bindir: Path, timeout: float = 30.0, attempts: int = 3) -> PostgresServer:
    began = time.monotonic()
    user = _unprivileged_user()
    workdir = Path(tempfile.mkdtemp(prefix="codeyard-pg-", dir=_scratch_root()))
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
        raise ServiceStartError(f"initdb exited with {rc}:\n{tail(init_log)}")

    last_error = "not started"
    for _ in range(attempts):
        port = free_port()
        logfile = workdir / f"postgres-{port}.log"
        with logfile.open("wb") as log:
            if user is not None:
                os.chown(logfile, pwd.getpwnam(user).pw_uid, -1)
            argv = (
                str(bindir / "postgres"),
                *("-D", str(data), "-p", str(port), "-k", str(workdir / "sock")),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            )
            proc = _run_as(user, list(argv), cwd=workdir, stdout=log)
        server = PostgresServer(bindir, port, workdir, user, proc, _logfile=logfile, argv=argv)
        if _ready(bindir, port, proc, time.monotonic() + timeout):
            server.started_in = time.monotonic() - began
            return server
        last_error = f"exit code {proc.poll()}; log:\n{tail(logfile)}"
        stop_process(proc, signal.SIGINT)
    shutil.rmtree(workdir, ignore_errors=True)
    raise ServiceStartError(f"postgres did not accept connections ({last_error})")
