"""Writing a provider's generated config files into the CLI's private HOME."""

from __future__ import annotations

import os
import secrets
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

    Blocking: run it in a worker thread. Each file is written to a fresh temporary name
    (``O_EXCL``: never follows a planted symlink) and renamed over the target, so a CLI
    starting concurrently in the same HOME reads the old or the new file, never half of
    one; ``rename`` replaces a symlink at the target rather than writing through it.
    """
    for rel in files:
        check_relative(rel)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for rel, content in files.items():
        target = home.joinpath(*rel.parts)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content.encode())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
