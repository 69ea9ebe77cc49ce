"""The codeyard wheel that goes into worker images: the same codeyard the manager runs.

Where it comes from, first match wins:

1. the ``worker_wheel`` setting (``CODEYARD_WORKER_WHEEL``): that file; its identity (the
   recipe's ``wrapper_hash``) is the sha256 of its bytes;
2. a source checkout (``pyproject.toml`` next to the ``src/`` directory the package is
   loaded from): a wheel built from it with ``uv build --wheel`` (``python -m pip wheel``
   without uv) and ``SOURCE_DATE_EPOCH`` fixed, so equal sources give equal bytes and the
   image build's layer cache holds. It is kept under
   ``$XDG_CACHE_HOME/codeyard/wheels/<wrapper_source_hash>/`` and reused; its identity is
   :func:`~codeyard.adapters.docker.image_builder.wrapper_source_hash` of the checkout;
3. otherwise (an installed codeyard without its sources) :class:`InvalidSettings`.

A cache entry is built in a temporary directory and renamed into place, so a reader sees a
complete entry or none; a per-hash ``flock`` makes concurrent processes build it once. A
build during which the sources changed is discarded and redone (up to 3 times).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

import codeyard
from codeyard.adapters.docker.image_builder import wrapper_source_hash
from codeyard.app.settings import InvalidSettings, Settings, env_var_name
from codeyard.domain.errors import ImageBuildFailed

#: 1980-01-01, the earliest time a zip entry can carry: every build stamps the same times.
SOURCE_DATE_EPOCH = "315532800"
BUILD_TIMEOUT_S = 600
_LOG_TAIL_CHARS = 4000
#: Builds retried when the sources change under one (an editor saving mid-build).
_BUILD_ATTEMPTS = 3


@dataclass(frozen=True)
class WrapperWheel:
    """A wheel file and the ``wrapper_hash`` a worker image recipe records for it."""

    path: Path
    source_hash: str


def source_checkout() -> Path | None:
    """The checkout codeyard runs from (``<root>/src`` is the package), else ``None``."""
    package = Path(codeyard.__file__).resolve().parent
    root = package.parent
    if package.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codeyard" / "wheels"


async def wrapper_wheel(
    settings: Settings, *, source: Path | None = None, cache_dir: Path | None = None
) -> WrapperWheel:
    """The wheel for worker images (see the module notes for the rules).

    ``source`` overrides the detected checkout and ``cache_dir`` the wheel cache (tests).
    Raises :class:`InvalidSettings` when the setting names no wheel file or there is
    neither a setting nor a checkout, :class:`ImageBuildFailed` when the build fails.
    """
    if settings.worker_wheel is not None:
        return await anyio.to_thread.run_sync(_configured, settings.worker_wheel)
    root = source if source is not None else source_checkout()
    if root is None or not (root / "pyproject.toml").is_file() or not (root / "src").is_dir():
        raise InvalidSettings(
            f"codeyard does not run from a source checkout: set {env_var_name('worker_wheel')} "
            "to the codeyard wheel worker images should install",
            setting="worker_wheel",
            env=env_var_name("worker_wheel"),
            source=str(root) if root is not None else None,
        )
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    # The build may outlive a cancelled caller: it finishes and leaves a complete entry.
    return await anyio.to_thread.run_sync(_cached_build, root, cache, abandon_on_cancel=True)


def _configured(path: Path) -> WrapperWheel:
    if not path.is_file() or path.suffix != ".whl":
        raise InvalidSettings(
            f"{env_var_name('worker_wheel')} must name an existing *.whl file",
            setting="worker_wheel",
            env=env_var_name("worker_wheel"),
            path=str(path),
        )
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return WrapperWheel(path=path.resolve(), source_hash=digest.hexdigest())


def _cached_build(root: Path, cache: Path) -> WrapperWheel:
    cache.mkdir(parents=True, exist_ok=True)
    for _ in range(_BUILD_ATTEMPTS):
        source_hash = wrapper_source_hash(root)
        with _flock(cache / f"{source_hash}.lock"):
            found = _wheel_in(cache / source_hash) or _build_entry(root, cache, source_hash)
        if found is not None:
            return WrapperWheel(path=found, source_hash=source_hash)
    raise ImageBuildFailed(
        "the sources kept changing while the codeyard wheel was built",
        source=str(root),
        attempts=_BUILD_ATTEMPTS,
        log="",
    )


def _build_entry(root: Path, cache: Path, source_hash: str) -> Path | None:
    """Build the wheel of ``root`` into ``cache/<source_hash>``; ``None`` when the sources
    changed meanwhile (the wheel would not be what the hash names)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{source_hash[:16]}-", dir=cache))
    try:
        _build(root, tmp)
        if _wheel_in(tmp) is None:
            raise ImageBuildFailed("the wheel build produced no *.whl", source=str(root), log="")
        if wrapper_source_hash(root) != source_hash:
            return None
        # Atomic: a reader never sees half an entry, even one not taking the lock.
        tmp.rename(cache / source_hash)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _wheel_in(cache / source_hash)


def _wheel_in(directory: Path) -> Path | None:
    wheels = sorted(directory.glob("*.whl")) if directory.is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    # Blocking: the caller runs in a worker thread, and a holder dying releases the lock.
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(root: Path, out: Path) -> None:
    uv = shutil.which("uv")
    if uv is not None:
        argv = [uv, "build", "--wheel", "--out-dir", str(out), str(root)]
    else:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(root)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildFailed(
            "could not build the codeyard wheel", source=str(root), command=argv[:3], log=str(exc)
        ) from exc
    if done.returncode != 0:
        raise ImageBuildFailed(
            "the codeyard wheel build failed",
            source=str(root),
            command=argv[:3],
            exit_code=done.returncode,
            log=(done.stdout + done.stderr)[-_LOG_TAIL_CHARS:],
        )
