"""Offline base images: debootstrap a minimal root filesystem and ``docker import`` it.

There is no registry to pull ``ubuntu:24.04`` from on the machines codeyard targets, so the
base of every worker image is bootstrapped locally (Ubuntu noble, falling back to Debian
bookworm) and tagged ``codeyard-base:<distro>``. Needs root and ``debootstrap``
(``scripts/dev setup`` installs it). Measured here: noble ~20 s, bookworm ~40 s, import ~2 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import docker.errors

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, translate_error
from codeyard.domain.container import LABEL_PREFIX
from codeyard.domain.errors import ImageBuildFailed

BASE_REPOSITORY = "codeyard-base"
LABEL_BASE_DISTRO = LABEL_PREFIX + "base-distro"
LABEL_BASE_CREATED = LABEL_PREFIX + "base-created-at"
DEFAULT_DISTRO = "ubuntu-noble"
FALLBACK_DISTRO = "debian-bookworm"

#: The noble release pocket never changes, so the keyring .deb is pinned by hash: nothing
#: fetched over plain HTTP is trusted before it is checked (debootstrap then verifies the
#: archive's signatures with it).
_UBUNTU_KEYRING_URL = (
    "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/"
    "ubuntu-keyring_2023.11.28.1_all.deb"
)
_UBUNTU_KEYRING_SHA256 = "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"
_UBUNTU_KEYRING_PATH = "usr/share/keyrings/ubuntu-archive-keyring.gpg"


@dataclass(frozen=True)
class _Distro:
    suite: str
    mirror: str
    #: debootstrap script; Debian's debootstrap predates noble, whose script is gutsy's.
    script: str | None
    sources: str


DISTROS: dict[str, _Distro] = {
    "ubuntu-noble": _Distro(
        suite="noble",
        mirror="http://archive.ubuntu.com/ubuntu",
        script="/usr/share/debootstrap/scripts/gutsy",
        # universe holds tini and gh; debootstrap only configures main.
        sources=(
            "deb http://archive.ubuntu.com/ubuntu noble main universe\n"
            "deb http://archive.ubuntu.com/ubuntu noble-updates main universe\n"
            "deb http://security.ubuntu.com/ubuntu noble-security main universe\n"
        ),
    ),
    "debian-bookworm": _Distro(
        suite="bookworm",
        mirror="http://deb.debian.org/debian",
        script=None,
        sources=(
            "deb http://deb.debian.org/debian bookworm main\n"
            "deb http://deb.debian.org/debian bookworm-updates main\n"
            "deb http://deb.debian.org/debian-security bookworm-security main\n"
        ),
    ),
}


def base_tag(distro: str) -> str:
    return f"{BASE_REPOSITORY}:{distro}"


def _lock_dir() -> Path:
    return Path(os.environ.get("CODEYARD_LOCK_DIR", tempfile.gettempdir()))


@contextlib.contextmanager
def _flock(path: Path, timeout_s: float) -> Generator[None]:
    """An exclusive ``flock``: one bootstrap per distro across processes and threads."""
    with path.open("w") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageBuildFailed(
                        "timed out waiting for another base image bootstrap", lock=str(path)
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _existing(client: docker.DockerClient, tag: str) -> str | None:
    try:
        image_id = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None
    except DOCKER_ERRORS as exc:
        raise translate_error(exc, image=tag) from exc
    return image_id


def _run(argv: list[str], *, log: list[str], timeout_s: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildFailed(f"{argv[0]} failed", argv=argv, log=str(exc)) from exc
    log.append((proc.stdout + proc.stderr)[-4000:])
    if proc.returncode != 0:
        raise ImageBuildFailed(
            f"{argv[0]} exited with {proc.returncode}", argv=argv, log="\n".join(log)[-4000:]
        )


def _ubuntu_keyring(workdir: Path) -> Path:
    deb = workdir / "ubuntu-keyring.deb"
    try:
        with urllib.request.urlopen(_UBUNTU_KEYRING_URL, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        raise ImageBuildFailed(
            "could not fetch the Ubuntu keyring", url=_UBUNTU_KEYRING_URL, log=str(exc)
        ) from exc
    if hashlib.sha256(data).hexdigest() != _UBUNTU_KEYRING_SHA256:
        raise ImageBuildFailed("the Ubuntu keyring .deb has an unexpected hash", log="")
    deb.write_bytes(data)
    _run(["dpkg-deb", "-x", str(deb), str(workdir / "keyring")], log=[], timeout_s=60)
    return workdir / "keyring" / _UBUNTU_KEYRING_PATH


def _bootstrap(client: docker.DockerClient, distro: str, timeout_s: float) -> str:
    spec = DISTROS[distro]
    if shutil.which("debootstrap") is None:
        raise ImageBuildFailed(
            "debootstrap is missing: run scripts/dev setup (apt-get install debootstrap)",
            distro=distro,
            log="",
        )
    # /var/tmp, not /tmp: debootstrap creates device nodes, which a nodev tmpfs refuses.
    workdir = Path(tempfile.mkdtemp(prefix="codeyard-base-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    log: list[str] = []
    try:
        argv = ["debootstrap", "--variant=minbase", "--arch", _dpkg_arch()]
        if distro.startswith("ubuntu-"):
            argv.append(f"--keyring={_ubuntu_keyring(workdir)}")
        argv += [spec.suite, str(rootfs), spec.mirror]
        if spec.script is not None:
            argv.append(spec.script)
        _run(argv, log=log, timeout_s=timeout_s)
        (rootfs / "etc/apt/sources.list").write_text(spec.sources)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar_path = workdir / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            # Numeric owners as in the rootfs: names may differ from the host's.
            tar.add(rootfs, arcname=".", filter=_numeric)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        repository, tag = base_tag(distro).split(":")
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            'CMD ["/bin/bash"]',
            f"LABEL {LABEL_BASE_DISTRO}={distro} {LABEL_BASE_CREATED}={created}",
        ]
        try:
            client.api.import_image_from_file(
                str(tar_path), repository=repository, tag=tag, changes=changes
            )
        except DOCKER_ERRORS as exc:
            raise translate_error(exc, image=base_tag(distro)) from exc
    finally:
        # --one-file-system: an interrupted debootstrap can leave /proc mounted in rootfs.
        subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
    image_id = _existing(client, base_tag(distro))
    if image_id is None:
        raise ImageBuildFailed("docker import created no image", distro=distro, log="")
    return image_id


def _numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = ""
    info.gname = ""
    return info


def _dpkg_arch() -> str:
    out = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "amd64"


def ensure_base_image_sync(
    client: docker.DockerClient,
    *,
    distro: str = DEFAULT_DISTRO,
    fallback: bool = True,
    timeout_s: float = 900.0,
) -> str:
    """Blocking :func:`ensure_base_image`: the image id of ``codeyard-base:<distro>``.

    With ``fallback`` and an Ubuntu distro that fails to bootstrap, the Debian bookworm
    base is returned instead (callers use the id, not the tag).
    """
    if distro not in DISTROS:
        raise ImageBuildFailed("unknown base distro", distro=distro, known=sorted(DISTROS))
    with _flock(_lock_dir() / f"codeyard-base-{distro}.lock", timeout_s):
        found = _existing(client, base_tag(distro))
        if found is not None:
            return found
        try:
            return _bootstrap(client, distro, timeout_s)
        except ImageBuildFailed:
            if not fallback or distro == FALLBACK_DISTRO:
                raise
    return ensure_base_image_sync(client, distro=FALLBACK_DISTRO, fallback=False)


async def ensure_base_image(
    client: docker.DockerClient,
    *,
    distro: str = DEFAULT_DISTRO,
    fallback: bool = True,
    limiter: anyio.CapacityLimiter | None = None,
) -> str:
    """Reuse or bootstrap ``codeyard-base:<distro>``; its image id.

    Runs in a worker thread. Cancelling abandons the thread, which finishes (or fails) the
    bootstrap on its own and releases the lock: the next caller then finds the image.
    """
    return await anyio.to_thread.run_sync(
        lambda: ensure_base_image_sync(client, distro=distro, fallback=fallback),
        limiter=limiter,
        abandon_on_cancel=True,
    )
