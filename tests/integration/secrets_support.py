"""Canary secrets (issue #9): what the secret tests share.

The canary is a secret in the credential store that a worker gets as ``CANARY_VALUE``
(a name no provider's "looks like a credential" rule matches, so only the worker's own
redaction can hide it) and that the scripted model makes a tool print and hash.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import redis.asyncio as aioredis

from codeyard.domain.worker import SecretRef, WorkerSpec
from codeyard.testing.model_server import Scenario, Text, ToolCall
from codeyard.testing.model_server.tools import shell

SECRET_NAME = "canary"
SECRET_ENV = "CANARY_VALUE"
HASH_FILE = "canary.sha256"
#: What the tool prints before the value: the event must carry the redacted form.
SAID = "the secret is "


def new_canary() -> str:
    return f"canary-{secrets.token_hex(12)}"


def canary_hash(canary: str) -> str:
    return hashlib.sha256(canary.encode()).hexdigest()


def canary_spec() -> WorkerSpec:
    return WorkerSpec(secrets=(SecretRef(name=SECRET_NAME, env=SECRET_ENV),))


def canary_scenario(answer: str = "Done.") -> Scenario:
    """Turn 1: a Bash call printing the secret and hashing it into a file; turn 2: text."""
    command = (
        f"printf '%s' \"${SECRET_ENV}\" | sha256sum | cut -d' ' -f1 > {HASH_FILE}"
        f' && echo "{SAID}${SECRET_ENV}"'
    )
    tool: ToolCall = shell("claude", command)
    return Scenario(turns=[[tool], [Text(answer)]])


async def redis_dump(url: str) -> dict[str, str]:
    """Every key of ``url``'s database with its whole content as text (streams: every
    entry; hashes, lists, sets, sorted sets: every member)."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    out: dict[str, str] = {}
    try:
        async for key in client.scan_iter(count=500):
            kind = await client.type(key)
            value: object
            if kind == "string":
                value = await client.get(key)
            elif kind == "stream":
                value = await client.xrange(key, "-", "+")
            elif kind == "hash":
                value = await client.hgetall(key)
            elif kind == "list":
                value = await client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(await client.smembers(key))
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            else:
                value = "<" + str(kind) + ">"
            out[key] = json.dumps(value, ensure_ascii=False)
    finally:
        await client.aclose()
    return out


def holding(dump: dict[str, str], needle: str) -> list[str]:
    """The keys whose content holds ``needle`` (raw, or as JSON would escape it)."""
    escaped = json.dumps(needle)[1:-1]
    return sorted(k for k, v in dump.items() if needle in v or escaped in v or needle in k)
