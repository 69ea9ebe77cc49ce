"""Building domain payloads from values a parser has already checked, without validating.

Validation is a third of a stream parser's time per line (bench/parser.py): a
``MessagePayload(...)`` costs ~2.2 us, pydantic's ``model_construct`` ~4.6 us (a generic
loop over aliases and defaults), this ~1 us. It does what ``model_construct`` does for
the models it accepts (see :func:`trusted`): the same ``__dict__`` in field order, the
same ``model_fields_set`` (the names passed), defaults and default factories applied.

It is only sound where the caller guarantees every value already has its field's type
and meets its constraints (``str`` for ``str``, a tuple for ``tuple[str, ...]``, a JSON
decoder's dict for ``dict[str, JsonValue]``, a non-negative float for ``ge=0``...), which
is why each use says why in a comment, and tests/unit/test_claude_fast_path.py checks that
every payload a parser built this way equals the validated one. When in doubt, call the
model.

The one transformation validation makes that a caller cannot be expected to have done is
kept: a field's ``BeforeValidator`` (``Annotated[..., BeforeValidator(f)]``, e.g. the
nesting cap of :data:`~codeyard.domain.base.JsonObject`) is applied to a value passed for
it. Such a function must take the value alone and be a normalizer (idempotent, no error
for a value of the field's type).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, PlainValidator, WrapValidator

__all__ = ["trusted"]

M = TypeVar("M", bound=BaseModel)

#: Default values safe to share between instances (pydantic copies the others).
_IMMUTABLE = (type(None), bool, int, float, str, tuple, frozenset, Enum)

_setattr = object.__setattr__
_new = object.__new__


def trusted(cls: type[M]) -> Callable[..., M]:
    """``trusted(Model)(field=value, ...)``: ``Model`` built without validation.

    Refuses (``TypeError``, when the caller's module is imported) models where skipping
    validation would change more than the checks: validators (but a field's
    ``AfterValidator``, a check, and plain ``BeforeValidator``, applied), aliases,
    ``model_post_init``, private attributes, ``extra="allow"`` or a mutable default.
    Required fields must all be passed (nothing checks it: the tests do).
    """
    decorators = cls.__pydantic_decorators__
    if (
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
        or cls.__pydantic_post_init__
        or cls.__private_attributes__
        or cls.model_config.get("extra") == "allow"
        or any(f.alias or f.validation_alias for f in cls.model_fields.values())
    ):
        msg = f"{cls.__name__} has validators, aliases or hooks: build it validated"
        raise TypeError(msg)
    # Every field has its slot here, in declaration order: the order of model_dump, repr
    # and JSON. Factory and required fields hold a placeholder until filled.
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    normalizers: list[tuple[str, Callable[[Any], Any]]] = []
    for name, field in cls.model_fields.items():
        for meta in field.metadata:
            # An AfterValidator only checks, like the constraints the caller guarantees;
            # the others transform what is passed, so they must run (or be refused).
            if isinstance(meta, BeforeValidator) and _takes_value_alone(meta.func):
                normalizers.append((name, meta.func))  # type: ignore[arg-type]
            elif isinstance(meta, BeforeValidator | PlainValidator | WrapValidator):
                msg = f"{cls.__name__}.{name} has a validator: build it validated"
                raise TypeError(msg)
        defaults[name] = None
        if field.default_factory is not None:
            factories.append((name, field.default_factory))  # type: ignore[arg-type]
        elif not field.is_required():
            if not isinstance(field.default, _IMMUTABLE):
                msg = f"{cls.__name__}.{name} has a mutable default: build it validated"
                raise TypeError(msg)
            defaults[name] = field.default

    def build(**values: Any) -> M:
        model = _new(cls)
        _setattr(model, "__dict__", {**defaults, **values})
        _setattr(model, "__pydantic_fields_set__", set(values))
        _setattr(model, "__pydantic_extra__", None)
        _setattr(model, "__pydantic_private__", None)
        return model

    def build_with_factories(**values: Any) -> M:
        model = build(**values)
        for name, factory in factories:
            if name not in values:
                model.__dict__[name] = factory()
        return model

    def build_normalized(**values: Any) -> M:
        # build_with_factories inlined: calling it would repack the keywords (~0.5 us).
        for name, normalize in normalizers:
            if name in values:
                values[name] = normalize(values[name])
        model = _new(cls)
        _setattr(model, "__dict__", {**defaults, **values})
        _setattr(model, "__pydantic_fields_set__", set(values))
        _setattr(model, "__pydantic_extra__", None)
        _setattr(model, "__pydantic_private__", None)
        for name, factory in factories:
            if name not in values:
                model.__dict__[name] = factory()
        return model

    if normalizers:
        return build_normalized
    return build_with_factories if factories else build


def _takes_value_alone(func: Any) -> bool:
    """A before-validator called with the value only (not also pydantic's info)."""
    try:
        return len(inspect.signature(func).parameters) == 1
    except (TypeError, ValueError):  # a builtin without a signature: take it as unknown
        return False
