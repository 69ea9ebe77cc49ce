"""Structured logs: structlog over the stdlib ``logging`` root, JSON lines or console text.

:func:`configure_logging` routes structlog's loggers and every stdlib logger (redis,
docker, asyncio, warnings) through one handler on stderr, so with ``json=True`` each line
is one JSON object: ``timestamp`` (ISO, UTC), ``level``, ``logger``, ``event`` and the
context bound with :mod:`structlog.contextvars` (the manager binds ``worker_id``,
``task_id``, ``request_id``). :func:`mask_secrets` runs last on every record: values of
keys named like a secret, and passwords inside URLs in any string, become ``****``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from codeyard.adapters.cli.redact import Redactor
from codeyard.app.settings import mask_url

MASK = "****"
#: Key fragments of secret values (keys are lowercased, ``-`` read as ``_``).
SECRET_KEY_PARTS = ("password", "passwd", "secret", "api_key", "apikey", "authorization")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
#: Our handler on the root logger (replaced, not stacked, when configured again).
_HANDLER_NAME = "codeyard"


def is_secret_key(key: str) -> bool:
    """Whether a value under ``key`` is a secret (``github_token``, ``x-api-key``, ...).

    ``*tokens`` keys are token *counts* (``input_tokens``, ``max_tokens``), not secrets.
    """
    name = key.lower().replace("-", "_")
    if any(part in name for part in SECRET_KEY_PARTS):
        return True
    return "token" in name and not name.endswith("tokens")


def mask_text(text: str) -> str:
    """``text`` with URL passwords and bearer/basic credentials replaced by ``****``."""
    if "://" in text:
        text = _URL.sub(lambda m: _mask_one_url(m.group(0)), text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)


def _mask_one_url(url: str) -> str:
    try:
        return mask_url(url)
    except ValueError:  # unparsable (a broken IPv6 host): hide all but the scheme
        return url.partition("://")[0] + "://" + MASK


def _mask(key: str | None, value: Any) -> Any:
    if key is not None and is_secret_key(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(None, v) for v in value)
    return value


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys and URL passwords, nested values included."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask(key, value)
    return event_dict


def _redact_values(redactor: Redactor) -> Processor:
    def process(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        scrubbed: MutableMapping[str, Any] = redactor.scrub(dict(event_dict))
        return scrubbed

    return process


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = False,
    stream: TextIO | None = None,
    redact: Iterable[str] = (),
) -> None:
    """Log at ``level`` and above to ``stream`` (stderr) as JSON lines or console text.

    ``redact``: secret values (a worker's credential-store variables) replaced by
    ``[REDACTED]`` in every string of every record, whatever its key.

    Safe to call again (the handler is replaced). Tests reset with
    ``structlog.reset_defaults()`` and by removing the handler named ``codeyard``.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: module-level loggers must follow a later configure (tests, embedders).
        cache_logger_on_first_use=False,
    )
    out = stream or sys.stderr
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become a string before masking: they may quote a URL too.
            structlog.processors.format_exc_info,
            mask_secrets,
            *([_redact_values(Redactor(redact))] if redact else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (structlog defaults, our handler removed)."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.setLevel(logging.WARNING)  # the stdlib default
    logging.captureWarnings(False)
