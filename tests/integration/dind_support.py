"""A Docker-in-Docker probe image made from the host's own engine binaries (no registry).

busybox plus dockerd, containerd, its shim, runc, the docker CLI and tini, each with the
shared libraries ``ldd`` names, ``docker import``-ed as ``codeyard-test/dind-probe:<hash>``
(the hash covers the binaries' paths, sizes and mtimes, so it is rebuilt when they change).
~190 MB, ~3 s to import; cached by tag.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker
import docker.errors

REPOSITORY = "codeyard-test/dind-probe"
_BINARIES = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker")
_APPLETS = ("sh", "cat", "echo", "sleep", "id", "ls", "tar", "mount")
_LIB_RE = re.compile(r"(/\S+)")


class ProbeUnavailable(Exception):
    """A binary the probe image needs is missing on this host."""


def _find(name: str) -> Path:
    found = shutil.which(name, path="/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise ProbeUnavailable(f"{name} is not installed")
    return Path(found)


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    return [Path(m) for m in _LIB_RE.findall(out.stdout) if Path(m).exists()]


def _add_file(tar: tarfile.TarFile, source: Path, target: str) -> None:
    info = tar.gettarinfo(str(source.resolve()), arcname=target)
    with source.resolve().open("rb") as f:
        tar.addfile(info, f)


def _add_link(tar: tarfile.TarFile, target: str, link_to: str) -> None:
    info = tarfile.TarInfo(target)
    info.type, info.linkname = tarfile.SYMTYPE, link_to
    tar.addfile(info)


def _add_dir(tar: tarfile.TarFile, target: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(target)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def ensure_probe_image(client: docker.DockerClient) -> str:
    """The probe image's tag, importing it when missing. Raises ``ProbeUnavailable``."""
    busybox = _find("busybox")
    binaries = [_find(name) for name in _BINARIES]
    tini = _find("tini-static")
    everything = [busybox, tini, *binaries]
    digest = hashlib.sha256()
    for path in everything:
        stat = path.resolve().stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:16]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        pass
    else:
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            for folder in ("bin", "usr", "usr/bin", "etc", "tmp", "run", "var", "var/run"):
                _add_dir(tar, folder, 0o1777 if folder == "tmp" else 0o755)
            _add_file(tar, busybox, "bin/busybox")
            for applet in _APPLETS:
                _add_link(tar, f"bin/{applet}", "busybox")
            _add_file(tar, tini, "usr/bin/docker-init")
            libs: set[Path] = set()
            for binary in binaries:
                _add_file(tar, binary, f"usr/bin/{binary.name}")
                libs.update(_libraries(binary))
            folders = {p for lib in libs for p in lib.parents if p != Path("/")}
            for folder in sorted(str(f).lstrip("/") for f in folders):
                if folder not in ("usr", "usr/bin"):
                    _add_dir(tar, folder)
            for lib in sorted(libs):
                _add_file(tar, lib, str(lib).lstrip("/"))
            _add_file_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version, changes=["ENV PATH=/usr/bin:/bin"]
        )
    return tag


def _add_file_bytes(tar: tarfile.TarFile, target: str, data: bytes) -> None:
    info = tarfile.TarInfo(target)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))
