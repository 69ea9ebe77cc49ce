"""The base every domain model shares: frozen, strict about unknown keys, typed errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    JsonValue,
    ValidationError,
)

from codeyard.domain.errors import InvalidName, InvalidRequest

# Identifiers end up in Redis keys, container names, labels and SQL: one conservative shape.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise InvalidName("identifier must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value=value)
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""An identifier safe to embed in stream keys, labels and container names."""


#: How deep a :data:`JsonObject` may nest (the object itself is level 1). Pydantic writes
#: JSON only ~255 levels deep and reads it back only ~200 (issue #9), counted from the
#: event envelope; real tool inputs nest a few levels. 64 leaves room for both.
JSON_MAX_DEPTH = 64
#: What stands for a value nested deeper than :data:`JSON_MAX_DEPTH`.
JSON_TOO_DEEP = f"<cut: JSON nested deeper than {JSON_MAX_DEPTH} levels>"
#: A tuple, not ``dict | list``: isinstance() checks it ~3x faster (tool inputs, per event).
_JSON_CONTAINERS = (dict, list)


def _fits(value: dict[Any, Any] | list[Any], levels: int) -> bool:
    if levels < 1:
        return False
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, _JSON_CONTAINERS) and not _fits(item, levels - 1):
            return False
    return True


def _cut(value: Any, levels: int) -> Any:
    if not isinstance(value, _JSON_CONTAINERS):
        return value
    if levels < 1:
        return JSON_TOO_DEEP
    if isinstance(value, dict):
        return {key: _cut(item, levels - 1) for key, item in value.items()}
    return [_cut(item, levels - 1) for item in value]


def cap_json_depth(value: Any) -> Any:
    """``value`` itself when it nests at most :data:`JSON_MAX_DEPTH` levels (the walk
    stops there, so it is cheap and its recursion bounded), else a copy with every
    container below that level replaced by :data:`JSON_TOO_DEEP`. Anything else passes
    unchanged, for validation to judge."""
    if isinstance(value, _JSON_CONTAINERS) and not _fits(value, JSON_MAX_DEPTH):
        return _cut(value, JSON_MAX_DEPTH)
    return value


JsonObject = Annotated[dict[str, JsonValue], BeforeValidator(cap_json_depth)]
"""A JSON object from outside (a tool's input, a provider's detail), its nesting capped
by :func:`cap_json_depth` so that the model holding it always serializes and reads back.
:func:`~codeyard.domain.trusted.trusted` builders apply the cap too."""


def refuse_json_depth(value: Any) -> Any:
    """``value`` itself when it nests at most :data:`JSON_MAX_DEPTH` levels, else
    :class:`InvalidRequest` (the walk stops at the cap: no RecursionError, however deep).
    For data a caller asked to store or act on, which must not be altered silently."""
    if isinstance(value, _JSON_CONTAINERS) and not _fits(value, JSON_MAX_DEPTH):
        raise InvalidRequest(
            f"JSON nested deeper than {JSON_MAX_DEPTH} levels", max_depth=JSON_MAX_DEPTH
        )
    return value


StrictJsonObject = Annotated[dict[str, JsonValue], BeforeValidator(refuse_json_depth)]
"""A JSON object a caller hands over to be kept (a job's payload): nesting deeper than
:data:`JSON_MAX_DEPTH` is refused with :class:`InvalidRequest` rather than cut, so the
model always serializes and reads back and what is stored is what was sent."""
CappedJson = Annotated[JsonValue, BeforeValidator(cap_json_depth)]
"""Any JSON value, containers capped like :data:`JsonObject` (a reply's result)."""


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
