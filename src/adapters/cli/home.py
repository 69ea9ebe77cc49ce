"""Writing a provider's generated config files into the CLI's private HOME."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from codeyard.domain.errors import InvalidRequest


def check_relative(path: PurePosixPath) -> None:
    """Refuse absolute paths and ``..``: generated files stay inside HOME."""
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InvalidRequest(
            "config files must be relative paths inside HOME",
            errors=[{"loc": "files", "msg": f"bad path {str(path)!r}"}],
        )


def write_home_files(home: Path, files: Mapping[PurePosixPath, str]) -> None:
    """Create ``home`` (0700) and write each file (0600, parents 0700), replacing content.

    Blocking: run it in a worker thread. The final path component is never followed if it
    is a symlink (``O_NOFOLLOW``), so a tool cannot redirect a config write elsewhere.
    """
    for rel in files:
        check_relative(rel)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for rel, content in files.items():
        target = home.joinpath(*rel.parts)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            # An existing file keeps its mode through O_CREAT: tighten it explicitly.
            os.fchmod(fd, 0o600)
            out.write(content.encode())
