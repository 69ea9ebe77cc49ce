"""The built wheel is what a user installs: it must hold every module and data file, and
``import codeyard.domain, codeyard.ports`` must work from it without the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    assert uv, "uv is installed by scripts/dev setup"
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("codeyard-*.whl")
    return built


def test_wheel_holds_every_source_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "codeyard/" + str(path.relative_to(ROOT / "src"))
        for path in (ROOT / "src").rglob("*")
        if path.is_file() and path.suffix in {".py", ".sql", ".typed"}
    }
    assert expected, "no source files found"
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("src/", "domain/", "tests/")) for n in names)


def test_installed_wheel_imports_as_codeyard(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import sys, codeyard, codeyard.domain, codeyard.ports\n"
        "print(codeyard.__file__)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'redis', 'asyncpg', 'docker', 'anyio', 'httpx'}))\n"
        "from codeyard.adapters.postgres.migrate import available_migrations\n"
        "print([m.name for m in available_migrations()])\n"
    )
    # PYTHONPATH comes before site-packages, where the editable install lives.
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(target)
    assert out[1] == "[]", "domain and ports must load no I/O library"
    # SQL migrations are package data: they must be readable from the installed wheel.
    assert out[2].startswith("['0001_initial")
