"""WorkerImages: the recipe a WorkerSpec maps to, its key, and where the wrapper wheel is from."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from codeyard.adapters.docker.base_image import DEFAULT_DISTRO, DISTROS
from codeyard.adapters.docker.image_builder import wrapper_source_hash
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.app.manager.images import WorkerImages, agent_cli
from codeyard.app.providers import BUILTINS
from codeyard.app.settings import InvalidSettings, Settings
from codeyard.app.wrapper_wheel import source_checkout, wrapper_wheel
from codeyard.domain.agent_cli import PINNED
from codeyard.domain.errors import UnsupportedProvider
from codeyard.domain.worker import Module, Resources, WorkerSpec

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BASE = "codeyard-base:ubuntu-noble"
BASE_ID = "sha256:" + "b" * 64


def _images(cache: InMemoryImageCache | None = None, **overrides: str) -> WorkerImages:
    args: dict[str, str] = {
        "base_image": BASE,
        "base_image_id": BASE_ID,
        "wrapper_hash": "w" * 64,
        "ca_certs_hash": "c" * 64,
        **overrides,
    }
    return WorkerImages(cache or InMemoryImageCache(), **args)


@pytest.mark.parametrize(
    ("provider", "cli"),
    [
        ("claude", "claude"),
        ("codex", "codex"),
        ("gemini", "gemini"),
        ("droid", "droid"),
        ("opencode", "opencode"),
        ("opencode-run", "opencode"),
        ("scripted", None),
    ],
)
def test_recipe_installs_the_cli_the_provider_runs_at_its_pin(
    provider: str, cli: str | None
) -> None:
    recipe = _images().recipe(WorkerSpec(agent=provider))
    assert recipe.agent == cli
    assert recipe.agent_version == (PINNED[cli].version if cli else None)
    # The instance's inputs are carried over as given.
    assert (recipe.base_image, recipe.base_image_id) == (BASE, BASE_ID)
    assert (recipe.wrapper_hash, recipe.ca_certs_hash) == ("w" * 64, "c" * 64)


def test_every_builtin_provider_with_a_cli_maps_to_a_pinned_package() -> None:
    for provider in BUILTINS:
        cli = agent_cli(provider)
        assert cli in PINNED, provider


def test_an_explicit_agent_version_wins_but_not_for_the_scripted_agent() -> None:
    images = _images()
    assert images.recipe(WorkerSpec(agent="claude", agent_version="2.0.0")).agent_version == (
        "2.0.0"
    )
    scripted = images.recipe(WorkerSpec(agent="scripted", agent_version="9.9.9"))
    assert (scripted.agent, scripted.agent_version) == (None, None)


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(UnsupportedProvider) as caught:
        _images().recipe(WorkerSpec(agent="acme"))
    assert caught.value.fields["provider"] == "acme"
    assert "claude" in caught.value.fields["known"]


def test_recipe_carries_the_specs_modules() -> None:
    spec = WorkerSpec(modules=(Module.PYTHON, Module.GIT, Module.DOCKER))
    assert _images().recipe(spec).modules == (Module.DOCKER, Module.GIT, Module.PYTHON)
    assert _images().recipe(WorkerSpec(modules=())).modules == ()


def test_key_ignores_what_does_not_shape_the_image() -> None:
    images = _images()
    plain = WorkerSpec(agent="claude", modules=(Module.GIT, Module.CURL))
    dressed = WorkerSpec(
        agent="claude",
        agent_version=PINNED["claude"].version,  # the pin, spelled out
        modules=(Module.CURL, Module.GIT, Module.CURL),
        instructions="be brief",
        env={"A": "1"},
        resources=Resources(cpus=1, memory_mb=512),
        labels={"team": "x"},
    )
    assert images.key(plain) == images.key(dressed) == images.recipe(plain).content_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"spec": WorkerSpec(agent="codex")},
        {"spec": WorkerSpec(agent="claude", agent_version="1.0.0")},
        {"spec": WorkerSpec(agent="claude", modules=(Module.GIT, Module.NODE))},
        {"base_image_id": "sha256:" + "d" * 64},
        {"wrapper_hash": "x" * 64},
        {"ca_certs_hash": ""},
    ],
    ids=["agent", "version", "modules", "base", "wrapper", "ca-certs"],
)
def test_key_changes_with_every_image_input(change: dict[str, object]) -> None:
    spec = change.pop("spec", WorkerSpec(agent="claude"))
    assert isinstance(spec, WorkerSpec)
    overrides = {k: str(v) for k, v in change.items()}
    assert _images(None, **overrides).key(spec) != _images().key(WorkerSpec(agent="claude"))


def test_key_is_the_same_in_another_process() -> None:
    # Keys name warm pools across manager processes: no per-process hash seed may leak in.
    spec = WorkerSpec(agent="opencode-run", modules=(Module.PYTHON, Module.GIT, Module.CURL))
    code = (
        "import json, sys\n"
        "from codeyard.adapters.memory.image_cache import InMemoryImageCache\n"
        "from codeyard.app.manager.images import WorkerImages\n"
        "from codeyard.domain.worker import WorkerSpec\n"
        "args = json.loads(sys.argv[1])\n"
        "images = WorkerImages(InMemoryImageCache(), **args['images'])\n"
        "print(images.key(WorkerSpec.model_validate(args['spec'])))\n"
    )
    args = {
        "images": {
            "base_image": BASE,
            "base_image_id": BASE_ID,
            "wrapper_hash": "w" * 64,
            "ca_certs_hash": "c" * 64,
        },
        "spec": spec.model_dump(mode="json"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == _images().key(spec)


async def test_ensure_goes_through_the_cache_once_per_key() -> None:
    cache = InMemoryImageCache()
    images = _images(cache)
    spec = WorkerSpec(agent="claude", modules=(Module.GIT, Module.CURL))
    first = await images.ensure(spec)
    again = await images.ensure(WorkerSpec(agent="claude", modules=(Module.CURL, Module.GIT)))
    assert first.content_hash == again.content_hash == images.key(spec)
    assert cache.build_count(first.content_hash) == 1
    assert images.cache is cache


# --- the wrapper wheel -----------------------------------------------------------------------


async def test_the_worker_wheel_setting_wins(tmp_path: Path) -> None:
    wheel = tmp_path / "codeyard-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a zip, but the bytes are the identity")
    got = await wrapper_wheel(Settings(worker_wheel=wheel), source=ROOT, cache_dir=tmp_path)
    assert got.path == wheel.resolve()
    assert got.source_hash == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert not (tmp_path / wrapper_source_hash(ROOT)).exists()  # nothing was built


@pytest.mark.parametrize("name", ["missing.whl", "codeyard.tar.gz"])
async def test_a_worker_wheel_setting_naming_no_wheel_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "codeyard.tar.gz").write_bytes(b"sdist")
    with pytest.raises(InvalidSettings) as caught:
        await wrapper_wheel(Settings(worker_wheel=tmp_path / name))
    assert caught.value.fields["env"] == "CODEYARD_WORKER_WHEEL"


async def test_without_setting_or_checkout_it_says_to_set_the_wheel(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="CODEYARD_WORKER_WHEEL") as caught:
        await wrapper_wheel(Settings(), source=tmp_path, cache_dir=tmp_path / "cache")
    assert caught.value.fields["setting"] == "worker_wheel"
    assert not (tmp_path / "cache").exists()


async def test_a_cached_wheel_for_the_same_sources_is_reused(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "src").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "codeyard"\n')
    (checkout / "src" / "__init__.py").write_text("")
    source_hash = wrapper_source_hash(checkout)
    cached = tmp_path / "cache" / source_hash / "codeyard-0-py3-none-any.whl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"built earlier")

    # A build would fail here (no build backend in that pyproject): the cache answers.
    got = await wrapper_wheel(Settings(), source=checkout, cache_dir=tmp_path / "cache")
    assert (got.path, got.source_hash) == (cached, source_hash)


def test_the_test_suite_runs_from_a_source_checkout() -> None:
    assert source_checkout() == ROOT


def test_the_base_distro_setting_lists_the_bootstrappable_distros() -> None:
    field = Settings.model_fields["worker_base_distro"]
    assert set(get_args(field.annotation)) == set(DISTROS)
    assert field.default == DEFAULT_DISTRO
