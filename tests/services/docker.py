"""A Docker client sized for tests, and the tiny local test image."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import docker.errors

from tests.services.common import ServiceStartError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_TEST_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-test-image"
TEST_IMAGE_TAG = os.environ.get("CODEYARD_TEST_IMAGE", "codeyard-test/busybox:latest")


def docker_client() -> docker.DockerClient:
    """A client sized for concurrent use (docker-py's default pool of 10 breaks under load)."""
    client = docker.from_env(max_pool_size=32)
    try:
        client.ping()
    except Exception:
        client.close()
        raise
    return client


def ensure_test_image(client: docker.DockerClient, tag: str = TEST_IMAGE_TAG) -> str:
    """Return ``tag``, building it with ``scripts/build-test-image`` when it is missing."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        result = subprocess.run(
            [str(BUILD_TEST_IMAGE_SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "CODEYARD_TEST_IMAGE": tag},
        )
        if result.returncode != 0:
            raise ServiceStartError(
                f"scripts/build-test-image exited with {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            ) from None
        client.images.get(tag)
    return tag
