"""The tiny argv interpreter behind InMemoryContainerRuntime: supported forms and refusals."""

from __future__ import annotations

import math

import pytest

from codeyard.adapters.memory._shell import Context, Outcome, run


def ctx() -> Context:
    return Context(files={}, env={"HOME": "/home/worker"}, workdir="/work")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["echo", "a", "b"], Outcome(0, "a b\n")),
        (["echo", "-n", "a"], Outcome(0, "a")),
        (["true"], Outcome(0)),
        (["false"], Outcome(1)),
        (["pwd"], Outcome(0, "/work\n")),
        (["env"], Outcome(0, "HOME=/home/worker\n")),
        (["sleep", "2.5"], Outcome(0, duration_s=2.5)),
        (["sleep", "infinity"], Outcome(0, duration_s=math.inf)),
        (["sh"], Outcome(0)),
        (["sh", "-c", "exit 3"], Outcome(3)),
        (["sh", "-c", "exit 300"], Outcome(44)),
        (["sh", "-c", "exit"], Outcome(0)),
        (["sh", "-c", "echo 'two words'"], Outcome(0, "two words\n")),
        (["sh", "-c", "echo oops >&2"], Outcome(0, "", "oops\n")),
        (["sh", "-c", "sh -c 'exit 5'"], Outcome(5)),
    ],
)
def test_supported_forms(argv: list[str], expected: Outcome) -> None:
    assert run(argv, ctx()) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["ls"],
        ["sh", "-c", "echo a; echo b"],
        ["sh", "-c", "echo a && echo b"],
        ["sh", "-c", "echo a | cat"],
        ["sh", "-c", "echo $HOME"],
        ["sh", "-c", "echo 'unbalanced"],
        ["sh", "-c", "cat x 2>&1"],
        ["sh", "script.sh"],
        ["env", "A=1", "echo"],
    ],
)
def test_everything_else_is_not_found(argv: list[str]) -> None:
    outcome = run(argv, ctx())
    assert outcome.exit_code == 127
    assert "not found" in outcome.stderr


def test_redirections_write_files_relative_to_workdir() -> None:
    c = ctx()
    assert run(["sh", "-c", "echo one > notes"], c) == Outcome(0)
    assert run(["sh", "-c", "echo two >> /work/notes"], c) == Outcome(0)
    assert run(["cat", "notes"], c) == Outcome(0, "one\ntwo\n")
    missing = run(["cat", "notes", "nope"], c)
    assert (missing.exit_code, missing.stdout) == (1, "one\ntwo\n")
    assert missing.stderr == "cat: can't open 'nope': No such file or directory\n"
