"""Every recorded agent transcript is under test.

The recordings live beside the clone, in ``../shared/agent-transcripts/**/*.stream.jsonl``
(CI checks them out there). Each must have a byte-identical copy in a folder of
tests/fixtures/transcripts/ that a provider's parser test reads in full (it globs
``*.stream.jsonl`` there and runs every file), so a newly recorded transcript cannot stay
untested: this test fails until it is copied into its provider's folder (``docker/<cli>``
as ``<cli>/docker-run1``). Without the folder the test skips, or fails in CI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.services import service_unavailable

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "agent-transcripts"
FIXTURES = REPO / "tests" / "fixtures" / "transcripts"

#: Fixture folder (relative to FIXTURES) -> the parser test that runs every transcript in it.
TESTED_FOLDERS = {
    "claude": "tests/unit/test_claude_parser.py",
    "codex": "tests/unit/test_codex_parser.py",
    "droid": "tests/unit/test_droid_parser.py",
    "gemini": "tests/unit/test_gemini_parser.py",
    "opencode/run": "tests/unit/test_opencode_run_parser.py",
}


def _recorded() -> list[Path]:
    if not SHARED.is_dir():
        service_unavailable(
            "the recorded agent transcripts",
            f"{SHARED} does not exist",
            "check out the shared folder beside the repository (../shared)",
        )
    return sorted(SHARED.rglob("*.stream.jsonl"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tested_copies() -> dict[str, list[Path]]:
    """sha256 -> the fixture files with that content, in the tested folders only."""
    copies: dict[str, list[Path]] = {}
    for folder in TESTED_FOLDERS:
        for path in sorted((FIXTURES / folder).glob("*.stream.jsonl")):
            copies.setdefault(_digest(path), []).append(path)
    return copies


def test_every_tested_folder_is_read_in_full_by_its_parser_test() -> None:
    for folder, module in TESTED_FOLDERS.items():
        assert (FIXTURES / folder).is_dir(), folder
        source = (REPO / module).read_text(encoding="utf-8")
        assert 'glob("*.stream.jsonl")' in source, f"{module} must run every file of {folder}"
        assert f'"{folder.split("/")[0]}"' in source, f"{module} must read {folder}"


def test_every_recorded_transcript_has_an_identical_tested_copy() -> None:
    recorded = _recorded()
    assert recorded, f"no *.stream.jsonl under {SHARED}"
    copies = _tested_copies()
    missing = [str(p.relative_to(SHARED)) for p in recorded if _digest(p) not in copies]
    assert not missing, (
        "recorded transcripts without a byte-identical copy under tests/fixtures/transcripts "
        f"(copy each into its provider's folder, docker/<cli> as <cli>/docker-run1): {missing}"
    )


def test_each_copy_sits_in_its_providers_folder() -> None:
    copies = _tested_copies()
    for path in _recorded():
        rel = path.relative_to(SHARED)
        cli = path.stem.split(".")[0] if rel.parts[0] == "docker" else rel.parts[0]
        folders = {str(c.parent.relative_to(FIXTURES)) for c in copies.get(_digest(path), [])}
        assert any(f.split("/")[0] == cli for f in folders), (rel, folders)
