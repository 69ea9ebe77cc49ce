"""``codeyard gc`` and ``codeyard images ls|gc`` against the real Docker engine.

Every test uses its own owner (``CODEYARD_OWNER``), so ``codeyard gc`` only ever sees the
embedded owners it made here; images gc runs with a huge ``--max-age-days`` (or
``--dry-run``) so the engine's other images are never removed by a test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import docker
import docker.errors
import pytest
import redis
from docker.models.containers import Container
from typer.testing import CliRunner

from codeyard.adapters.redis.image_usage import to_micros
from codeyard.app.cli import app
from codeyard.domain.container import LABEL_CREATED, LABEL_IMAGE_HASH, LABEL_OWNER

pytestmark = pytest.mark.timeout(180)

runner = CliRunner()
DEAD_PID = 2**22 - 1  # above the default pid_max: never a live process
NEVER = "100000"  # days: no real image on the engine is that old


def _env(owner: str, redis_url: str | None = None) -> dict[str, str | None]:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CODEYARD_")}
    return {**unset, "COLUMNS": "300", "CODEYARD_OWNER": owner, "CODEYARD_REDIS_URL": redis_url}


@pytest.fixture
def owner() -> str:
    return f"gc-test-{secrets.token_hex(4)}"


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[list[Container]]:
    made: list[Container] = []
    yield made
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _create(
    client: docker.DockerClient, image: str, owner: str, made: list[Container]
) -> Container:
    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    container = client.containers.create(
        image, command=["true"], labels={LABEL_OWNER: owner, LABEL_CREATED: old}
    )
    made.append(container)
    return container


def _exists(client: docker.DockerClient, container: Container) -> bool:
    try:
        client.containers.get(str(container.id))
    except docker.errors.NotFound:
        return False
    return True


def test_gc_removes_dead_runs_containers_and_keeps_live_and_serve_ones(
    docker_client: docker.DockerClient, test_image: str, owner: str, containers: list[Container]
) -> None:
    dead = _create(docker_client, test_image, f"{owner}-run-{DEAD_PID}", containers)
    live = _create(docker_client, test_image, f"{owner}-run-{os.getpid()}", containers)
    served = _create(docker_client, test_image, owner, containers)

    dry = runner.invoke(app, ["gc", "--dry-run", "--max-age-days", NEVER], env=_env(owner))
    assert dry.exit_code == 0, dry.output
    assert f"would remove container {dead.name} (owner {owner}-run-{DEAD_PID}" in dry.stdout
    assert _exists(docker_client, dead)

    result = runner.invoke(app, ["gc", "--max-age-days", NEVER], env=_env(owner))
    assert result.exit_code == 0, result.output
    assert f"removed container {dead.name}" in result.stdout
    assert str(live.name) not in result.stdout
    assert not _exists(docker_client, dead)
    assert _exists(docker_client, live)
    assert _exists(docker_client, served)


@pytest.fixture
def labelled_image(docker_client: docker.DockerClient, test_image: str) -> Iterator[str]:
    """A worker-like image (the hash label, created 30 days ago); its content hash."""
    content_hash = secrets.token_hex(32)
    tag = f"codeyard-gc-test:{content_hash[:16]}"
    created = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {test_image}\n".encode()),
        tag=tag,
        labels={LABEL_IMAGE_HASH: content_hash, LABEL_CREATED: created},
        rm=True,
    )
    yield content_hash
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.images.remove(tag, force=True)


def test_images_ls_json_lists_a_labelled_image_with_its_ledger_use(
    labelled_image: str, owner: str, redis_url: str
) -> None:
    result = runner.invoke(app, ["images", "ls", "--json"], env=_env(owner))
    assert result.exit_code == 0, result.output
    mine = [i for i in json.loads(result.stdout) if i["content_hash"] == labelled_image]
    assert len(mine) == 1
    assert mine[0]["tag"] == f"codeyard-gc-test:{labelled_image[:16]}"
    assert mine[0]["last_used_at"] is None

    used = datetime.now(UTC).replace(microsecond=0)
    with redis.Redis.from_url(redis_url) as ledger:
        ledger.zadd(f"codeyard:images:{owner}", {labelled_image: to_micros(used)})
    result = runner.invoke(app, ["images", "ls", "--json"], env=_env(owner, redis_url))
    assert result.exit_code == 0, result.output
    mine = [i for i in json.loads(result.stdout) if i["content_hash"] == labelled_image]
    assert datetime.fromisoformat(mine[0]["last_used_at"]) == used


def test_images_gc_dry_run_lists_without_removing(
    docker_client: docker.DockerClient, labelled_image: str, owner: str
) -> None:
    tag = f"codeyard-gc-test:{labelled_image[:16]}"
    result = runner.invoke(
        app, ["images", "gc", "--dry-run", "--max-age-days", "7"], env=_env(owner)
    )
    assert result.exit_code == 0, result.output
    assert f"would remove image {tag} ({labelled_image[:12]})" in result.stdout
    assert docker_client.images.get(tag).labels[LABEL_IMAGE_HASH] == labelled_image


def test_images_gc_keeps_an_old_image_a_container_uses(
    docker_client: docker.DockerClient, labelled_image: str, owner: str
) -> None:
    """Old by its label, unknown to any ledger, but a (stopped) container uses it."""
    tag = f"codeyard-gc-test:{labelled_image[:16]}"
    user = docker_client.containers.create(tag, command=["true"])
    try:
        args = ["images", "gc", "--dry-run", "--max-age-days", "7"]
        result = runner.invoke(app, args, env=_env(owner))
        assert result.exit_code == 0, result.output
        assert tag not in result.stdout
    finally:
        user.remove(force=True)
