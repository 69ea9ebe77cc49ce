"""Secret redaction for CLI output: API keys must never reach an event, a log or a bus.

The run loop redacts every stdout line BEFORE it reaches the provider's parser (so neither
the event's ``raw`` nor anything the parser derives from the line can hold a secret), every
stderr line, and then scrubs each finished payload once more (:meth:`Redactor.scrub`), in
case a parser built text from something other than the line.

A secret is matched literally, and also in the escaped spellings a JSON line would carry
(``json.dumps`` with and without ``ensure_ascii``), because the parser decodes the escape
back into the secret. Longer secrets are matched first, so a secret containing another is
replaced whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: What a secret is replaced with.
REDACTED = "[REDACTED]"
#: Shorter "secrets" are not redacted: a value of a few characters cannot be told from
#: ordinary text, and replacing every occurrence would corrupt field names and answers
#: (an API key of "k" broke every JSON line). Real credentials are far longer.
MIN_SECRET_LENGTH = 8


def _spellings(secret: str) -> set[str]:
    forms = {secret}
    for ensure_ascii in (True, False):
        forms.add(json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1])
    return {form for form in forms if form}


class Redactor:
    """Replaces every configured secret with :data:`REDACTED`. Secrets shorter than
    :data:`MIN_SECRET_LENGTH` are ignored."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms |= _spellings(secret)
        ordered = sorted(forms, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @property
    def active(self) -> bool:
        """Whether there is anything to redact."""
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def contains_secret(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(text) is not None

    def scrub(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, tuples, strings...) with every string
        redacted; returns ``value`` itself when nothing in it needs redacting."""
        if self._pattern is None or not self._has_secret(value):
            return value
        return self._scrub(value)

    def _has_secret(self, value: Any) -> bool:
        if isinstance(value, str):
            return self.contains_secret(value)
        if isinstance(value, dict):
            return any(self._has_secret(k) or self._has_secret(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self._has_secret(v) for v in value)
        return False

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._scrub(v) for v in value)
        return value
