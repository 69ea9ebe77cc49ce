"""Secret references in prompts (src/domain/prompt_secrets.py): parsing and filling in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeyard.domain.prompt_secrets import UnknownPromptSecret, fill_secrets, secret_references

NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,15}\Z")
#: Text that cannot form a reference by itself (no braces).
PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40)


def test_references_are_found_in_order_once_each() -> None:
    prompt = "use {{secret:TOKEN}} then {{secret:B_2}} and {{secret:TOKEN}} again"
    assert secret_references(prompt) == ("TOKEN", "B_2")
    assert secret_references("no {{ref}} here, {secret:X}, {{ secret:X }}") == ()


def test_fill_replaces_every_reference_with_its_value() -> None:
    secrets = {"TOKEN": "t-123456789", "B_2": "b\\1 $&"}
    prompt = "a {{secret:TOKEN}} b {{secret:B_2}} c {{secret:TOKEN}}"
    assert fill_secrets(prompt, secrets) == "a t-123456789 b b\\1 $& c t-123456789"


def test_a_prompt_without_references_is_returned_as_is() -> None:
    prompt = "plain {{braces}} and {{secret-ish}}"
    assert fill_secrets(prompt, {}) is prompt


@pytest.mark.parametrize(
    ("prompt", "missing"),
    [
        ("{{secret:NOPE}}", ["NOPE"]),
        ("{{secret:TOKEN}} {{secret:NOPE}} {{secret:ALSO}}", ["NOPE", "ALSO"]),
        ("{{secret: TOKEN}}", [" TOKEN"]),  # malformed names are errors, not text
        ("{{secret:}}", [""]),
        ("{{secret:1X}}", ["1X"]),
    ],
)
def test_unknown_or_malformed_references_name_what_is_missing(
    prompt: str, missing: list[str]
) -> None:
    secrets = {"TOKEN": "value-of-the-token"}
    with pytest.raises(UnknownPromptSecret) as caught:
        fill_secrets(prompt, secrets)
    assert caught.value.fields["names"] == missing
    assert caught.value.code == "unknown_prompt_secret"
    for name in missing:
        assert repr(name) in caught.value.message
    assert "value-of-the-token" not in str(caught.value.to_dict())


@given(
    parts=st.lists(st.tuples(PLAIN, NAMES), max_size=6),
    tail=PLAIN,
    values=st.dictionaries(NAMES, st.text(max_size=20), max_size=6),
)
def test_fill_is_a_one_pass_substitution(
    parts: list[tuple[str, str]], tail: str, values: dict[str, str]
) -> None:
    secrets = {name: values.get(name, f"{{{{secret:{name}}}}}") for _, name in parts}
    prompt = "".join(f"{text}{{{{secret:{name}}}}}" for text, name in parts) + tail
    # Values that look like references (even their own) are not expanded again.
    expected = "".join(text + secrets[name] for text, name in parts) + tail
    assert fill_secrets(prompt, secrets) == expected
    assert secret_references(prompt) == tuple(dict.fromkeys(name for _, name in parts))


@given(text=PLAIN)
def test_text_without_references_is_unchanged(text: str) -> None:
    assert fill_secrets(text, {}) == text
    assert secret_references(text) == ()
