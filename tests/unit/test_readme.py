"""The README's examples run and its configuration table matches the settings model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codeyard.app.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_generated_from_the_model() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.DOTALL
    )
    assert match, "README lacks the settings-table markers"
    assert match.group(1).strip() == settings_table_markdown().strip(), (
        "README table is stale: run `codeyard config --markdown` and paste it between markers"
    )


def test_readme_python_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    # The example prints the error code it caught; the comment in the README says which.
    assert capsys.readouterr().out.split() == ["prompt_required"]
