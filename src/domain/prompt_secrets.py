"""Secret references in prompts: ``{{secret:NAME}}``, filled in by the worker only.

A prompt travels through the client, ``worker:commands`` and ``worker:{id}:input``, so a
literal secret in it would sit in Redis. A prompt names a secret instead: ``NAME`` is the
``env`` of one of the worker's :class:`~codeyard.domain.worker.SecretRef` (the variable the
worker got it as, e.g. ``{{secret:GITHUB_TOKEN}}``). The worker replaces each reference
with the variable's value right before handing the prompt to the agent CLI, and only for
its declared secret variables (:data:`~codeyard.domain.secrets.SECRET_ENV_VAR`): a
reference cannot read any other variable of the container.

Every ``{{secret:...}}`` is a reference, with no escape: a malformed or unknown one is an
error naming it (:class:`UnknownPromptSecret`), not text sent to the model as is (a typo
would otherwise ask the model to use a placeholder). Values are inserted in one pass, so a
value that itself looks like a reference is not expanded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from codeyard.domain.errors import InvalidInput

#: A reference; group 1 is whatever stands between ``secret:`` and ``}}``.
SECRET_REFERENCE = re.compile(r"\{\{secret:([^{}]*)\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnknownPromptSecret(InvalidInput):
    """A prompt references a secret the worker does not have, or a malformed name
    (``fields["names"]``: the references, never a value)."""

    code = "unknown_prompt_secret"


def secret_references(prompt: str) -> tuple[str, ...]:
    """The names ``prompt`` references, in order of first appearance, each once."""
    return tuple(dict.fromkeys(m.group(1) for m in SECRET_REFERENCE.finditer(prompt)))


def fill_secrets(prompt: str, secrets: Mapping[str, str]) -> str:
    """``prompt`` with every reference replaced by its value in ``secrets`` (the worker's
    secret variables); :class:`UnknownPromptSecret` naming every reference that is
    malformed or not in ``secrets``. A prompt without references comes back unchanged."""
    names = secret_references(prompt)
    if not names:
        return prompt
    missing = [name for name in names if not _NAME.match(name) or name not in secrets]
    if missing:
        raise UnknownPromptSecret(
            "the prompt references secrets this worker does not have: "
            + ", ".join(repr(name) for name in missing)
            + " (a {{secret:NAME}} names the env of one of the worker spec's secrets)",
            names=missing,
        )
    # A function, not a template: a value's backslashes are not escapes.
    return SECRET_REFERENCE.sub(lambda m: secrets[m.group(1)], prompt)
