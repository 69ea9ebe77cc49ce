"""configure_logging: JSON lines with timestamp, level, logger and bound ids; secrets masked
(secret-named keys, URL passwords in any string, bearer credentials); console text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from codeyard.app.observability.logging import (
    MASK,
    configure_logging,
    is_secret_key,
    mask_secrets,
    mask_text,
    reset_logging,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    try:
        yield out
    finally:
        reset_logging()
        structlog.contextvars.clear_contextvars()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_processor_masks_secret_keys_nested_values_and_url_passwords() -> None:
    event = {
        "event": "connecting to redis://default:hunter2@cache:6379/0",
        "github_token": "ghp_abcdef",
        "x-api-key": "sk-1",
        "Authorization": "Bearer abc",
        "input_tokens": 12,  # a count, not a secret
        "headers": {"password": "p", "accept": "json"},
        "urls": ["postgresql://u:pw@db/x?sslmode=require", "http://plain/"],
        "token": None,
    }
    masked = mask_secrets(None, "info", dict(event))
    assert masked == {
        "event": f"connecting to redis://default:{MASK}@cache:6379/0",
        "github_token": MASK,
        "x-api-key": MASK,
        "Authorization": MASK,
        "input_tokens": 12,
        "headers": {"password": MASK, "accept": "json"},
        "urls": [f"postgresql://u:{MASK}@db/x?sslmode=require", "http://plain/"],
        "token": None,
    }


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("token", True),
        ("access_token", True),
        ("client_secret", True),
        ("db_password", True),
        ("api_key", True),
        ("authorization", True),
        ("max_tokens", False),
        ("worker_id", False),
        ("url", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_text_masks_bearer_credentials_and_unparsable_urls() -> None:
    assert mask_text("header Bearer abcdefghijkl sent") == f"header Bearer {MASK} sent"
    assert mask_text("http://[::1:pw@host/") == f"http://{MASK}"
    assert mask_text("no url here") == "no url here"


def test_json_lines_carry_timestamp_level_logger_and_bound_ids(stream: io.StringIO) -> None:
    configure_logging("info", json=True, stream=stream)
    log = structlog.get_logger("codeyard.test")
    with structlog.contextvars.bound_contextvars(worker_id="w-1", task_id="t-1"):
        log.info("worker running", request_id="r-1")
    log.debug("below the level")
    [line] = lines(stream)
    assert line["event"] == "worker running"
    assert (line["level"], line["logger"]) == ("info", "codeyard.test")
    assert (line["worker_id"], line["task_id"], line["request_id"]) == ("w-1", "t-1", "r-1")
    assert line["timestamp"].endswith("Z")


def test_secrets_never_reach_the_output(stream: io.StringIO) -> None:
    configure_logging("debug", json=True, stream=stream)
    log = structlog.get_logger("codeyard.test")
    log.warning("redis://:s3cret-pw@localhost:6379/0 unreachable", api_key="sk-ant-xyz")
    logging.getLogger("redis.connection").error("lost %s", "redis://u:s3cret-pw@h/1")
    try:
        raise RuntimeError("dsn postgresql://u:s3cret-pw@db/x")  # noqa: TRY301
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert "s3cret-pw" not in text
    assert "sk-ant-xyz" not in text
    first, stdlib, failure = lines(stream)
    assert first["event"] == f"redis://:{MASK}@localhost:6379/0 unreachable"
    assert (stdlib["logger"], stdlib["level"]) == ("redis.connection", "error")
    assert "RuntimeError" in failure["exception"]


def test_console_text_when_json_is_off_and_reconfiguring_replaces_the_handler(
    stream: io.StringIO,
) -> None:
    configure_logging("info", json=True, stream=io.StringIO())
    configure_logging("info", json=False, stream=stream)
    structlog.get_logger("codeyard.test").info("hello", password="pw")
    text = stream.getvalue()
    assert "hello" in text
    assert f"password={MASK}" in text
    assert not text.lstrip().startswith("{")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "codeyard"]
    assert len(ours) == 1
