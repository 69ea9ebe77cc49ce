"""The base every domain model shares: frozen, strict about unknown keys, typed errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from codeyard.domain.errors import InvalidName, InvalidRequest

# Identifiers end up in Redis keys, container names, labels and SQL: one conservative shape.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise InvalidName("identifier must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value=value)
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""An identifier safe to embed in stream keys, labels and container names."""


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors reduced to ``{"loc", "msg"}`` items (no input echo: may be secret)."""
    return [
        {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in exc.errors()
    ]


class DomainModel(BaseModel):
    """Frozen, ``extra="forbid"``; every way of building one raises a typed error.

    Semantic checks raise specific :class:`~codeyard.domain.errors.CodeyardError` subclasses
    straight out of validators; structural problems (wrong type, unknown key) surface as
    :class:`InvalidRequest` with the field list, through ``__init__`` and :meth:`parse`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidRequest(
                f"invalid {type(self).__name__}",
                model=type(self).__name__,
                errors=validation_errors(exc),
            ) from exc

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes) -> Self:
        """Validate a mapping or a JSON document; raises only ``CodeyardError`` subclasses."""
        try:
            if isinstance(data, str | bytes):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(
                f"invalid {cls.__name__}", model=cls.__name__, errors=validation_errors(exc)
            ) from exc
