"""Every sub-package under src/ must be listed in pyproject, or the wheel silently lacks it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import codeyard.domain

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    src = ROOT / "src"
    on_disk = {
        ".".join(("codeyard", *init.parent.relative_to(src).parts))
        for init in src.rglob("__init__.py")
    }
    assert on_disk, "no packages found under src/"
    assert on_disk == listed, {"missing": on_disk - listed, "stale": listed - on_disk}


def test_package_imports_as_codeyard_not_as_top_level_src() -> None:
    assert codeyard.domain.__name__ == "codeyard.domain"
    assert Path(codeyard.domain.__file__ or "").parent == ROOT / "src" / "domain"
