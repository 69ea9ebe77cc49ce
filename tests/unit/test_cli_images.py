"""``codeyard images ls|build|gc`` and ``codeyard gc``: argument handling, the owner/pid
parsing and age rules of gc, the dry-run output (on a fake engine), the doctor additions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from codeyard.adapters.docker.dockerfile import LABEL_AGENT, LABEL_MODULES
from codeyard.adapters.docker.networks import LABEL_POLICY
from codeyard.app import cli_images
from codeyard.app.cli import app
from codeyard.app.doctor import Status, base_image_check, check_redis_server, runtimes_check
from codeyard.app.gc import (
    WorkerImage,
    embedded_pid,
    leftovers,
    pid_alive,
    stale_images,
    worker_image,
)
from codeyard.app.settings import Settings
from codeyard.domain.container import LABEL_CREATED, LABEL_IMAGE_HASH, LABEL_OWNER

runner = CliRunner()
NOW = datetime(2030, 1, 10, tzinfo=UTC)
HASH = "ab" * 32


@pytest.mark.parametrize(
    ("owner", "pid"),
    [
        ("box-run-123", 123),
        ("box-run-0", None),  # pid 0 is no process
        ("box", None),  # a `codeyard serve` owner
        ("box-run-", None),
        ("box-run-12x", None),
        ("other-run-123", None),  # another host
        ("box-run-123-run-4", None),
        ("boxy-run-5", None),
    ],
)
def test_embedded_pid_only_names_this_hosts_embedded_runs(owner: str, pid: int | None) -> None:
    assert embedded_pid(owner, "box") == pid


def test_embedded_pid_treats_the_host_owner_literally() -> None:
    assert embedded_pid("a.b-run-7", "a.b") == 7
    assert embedded_pid("axb-run-7", "a.b") is None


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(2**22 - 1)  # above the default pid_max: never a live process


def _container(owner: str, *, age_s: float, ident: str = "c1") -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age_s)).isoformat()
    return {
        "Id": ident,
        "Names": [f"/{ident}"],
        "Labels": {LABEL_OWNER: owner, LABEL_CREATED: created},
    }


def test_leftovers_are_old_containers_of_dead_embedded_runs_only() -> None:
    items = [
        _container("box-run-10", age_s=120, ident="dead"),
        _container("box-run-11", age_s=120, ident="alive"),
        _container("box-run-10", age_s=30, ident="young"),
        _container("box", age_s=10_000, ident="serve"),
        _container("other-run-10", age_s=10_000, ident="other-host"),
        {"Id": "undated", "Labels": {LABEL_OWNER: "box-run-10"}},
    ]
    found = leftovers(items, "box", now=NOW, alive=lambda pid: pid == 11)
    assert [(c.container_id, c.name, c.owner, c.pid) for c in found] == [
        ("dead", "dead", "box-run-10", 10)
    ]


def test_leftovers_date_a_container_without_label_by_the_engine() -> None:
    epoch = int((NOW - timedelta(minutes=5)).timestamp())
    items = [{"Id": "x", "Labels": {LABEL_OWNER: "box-run-10"}, "Created": epoch}]
    assert [c.container_id for c in leftovers(items, "box", now=NOW, alive=lambda _: False)] == [
        "x"
    ]


def _image(ident: str, *, created_days: float | None, used_days: float | None) -> WorkerImage:
    return WorkerImage(
        tag=f"codeyard-worker:{ident}",
        image_id=ident,
        content_hash=ident * 4,
        agent="claude",
        modules=("git",),
        size_bytes=1,
        created_at=None if created_days is None else NOW - timedelta(days=created_days),
        last_used_at=None if used_days is None else NOW - timedelta(days=used_days),
    )


def test_stale_images_by_last_use_else_creation_never_in_use_or_undated() -> None:
    images = [
        _image("old-unused", created_days=30, used_days=None),
        _image("old-but-used-lately", created_days=30, used_days=1),
        _image("used-long-ago", created_days=30, used_days=10),
        _image("young", created_days=1, used_days=None),
        _image("in-container", created_days=30, used_days=None),
        _image("undated", created_days=None, used_days=None),
    ]
    stale = stale_images(images, {"in-container"}, now=NOW, max_age=timedelta(days=7))
    assert [i.image_id for i in stale] == ["old-unused", "used-long-ago"]


def test_worker_image_reads_the_labels() -> None:
    item = {
        "Id": "sha256:1",
        "RepoTags": ["<none>:<none>", "other:x", f"codeyard-worker:{HASH[:16]}"],
        "Labels": {
            LABEL_IMAGE_HASH: HASH,
            LABEL_AGENT: "codex",
            LABEL_MODULES: "git,python",
            LABEL_CREATED: "2030-01-01T00:00:00+00:00",
        },
        "Size": 42,
        "Created": 0,
    }
    image = worker_image(item)
    assert image.tag == f"codeyard-worker:{HASH[:16]}"
    assert (image.agent, image.modules, image.size_bytes) == ("codex", ("git", "python"), 42)
    assert image.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert image.as_json()["last_used_at"] is None
    untagged = worker_image({"Id": "sha256:2", "Labels": {LABEL_IMAGE_HASH: HASH}, "Created": 0})
    assert untagged.tag is None
    assert untagged.created_at == datetime(1970, 1, 1, tzinfo=UTC)


# --- the commands on a fake engine ----------------------------------------------------------


class FakeApi:
    def __init__(self) -> None:
        old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        self.removed: list[str] = []
        self._containers = [
            {"Id": "c-dead", "Names": ["/w-dead"], "ImageID": "sha256:x",
             "Labels": {LABEL_OWNER: "box-run-4194303", LABEL_CREATED: old}},
            {"Id": "c-live", "Names": ["/w-live"], "ImageID": "sha256:old",
             "Labels": {LABEL_OWNER: f"box-run-{os.getpid()}", LABEL_CREATED: old}},
        ]  # fmt: skip
        self._images = [
            {"Id": "sha256:old", "RepoTags": ["codeyard-worker:old"], "Size": 10,
             "Labels": {LABEL_IMAGE_HASH: HASH, LABEL_CREATED: old}},
        ]  # fmt: skip
        self._networks = [
            {"Id": "n1", "Name": "codeyard-allow-1", "Labels": {LABEL_OWNER: "box-run-4194303"}},
            {"Id": "n2", "Name": "codeyard-egress", "Labels": {LABEL_OWNER: "box"}},
        ]

    def containers(self, all: bool = False, filters: Any = None) -> list[dict[str, Any]]:
        return self._containers

    def images(self, filters: Any = None) -> list[dict[str, Any]]:
        return self._images

    def networks(self, filters: Any = None) -> list[dict[str, Any]]:
        assert filters == {"label": [LABEL_POLICY]}
        return self._networks

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> None:
            self.removed.append(name)
            raise AssertionError(f"dry run called {name}")

        return refuse


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()

    def close(self) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    client = FakeClient()
    monkeypatch.setattr(
        "codeyard.adapters.docker.client.open_docker_client", lambda *a, **k: client
    )
    yield client
    assert client.api.removed == []


def _env() -> dict[str, str | None]:
    """No CODEYARD_* of the caller's (no ledger), owner ``box``, no wrapping."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CODEYARD_")}
    return {**unset, "COLUMNS": "240", "CODEYARD_OWNER": "box"}


def test_gc_dry_run_lists_dead_run_leftovers_and_stale_images(fake_engine: FakeClient) -> None:
    result = runner.invoke(app, ["gc", "--dry-run"], env=_env())
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "would remove container w-dead (owner box-run-4194303, pid 4194303 gone)" in lines
    assert "would remove network codeyard-allow-1" in lines
    assert "images: nothing to remove" in lines  # a container uses the old image
    assert not any("w-live" in line or "codeyard-egress" in line for line in lines)


def test_images_gc_dry_run_lists_an_unused_old_image(fake_engine: FakeClient) -> None:
    fake_engine.api._containers = []
    result = runner.invoke(app, ["images", "gc", "--dry-run", "--max-age-days", "7"], env=_env())
    assert result.exit_code == 0, result.output
    assert f"would remove image codeyard-worker:old ({HASH[:12]})" in result.stdout
    kept = runner.invoke(app, ["images", "gc", "--dry-run", "--max-age-days", "60"], env=_env())
    assert "images: nothing to remove" in kept.stdout


def test_images_ls_json_without_a_ledger(fake_engine: FakeClient) -> None:
    result = runner.invoke(app, ["images", "ls", "--json"], env=_env())
    assert result.exit_code == 0, result.output
    assert '"content_hash": "' + HASH + '"' in result.stdout
    assert '"last_used_at": null' in result.stdout


def test_images_build_refuses_an_unknown_agent_or_module_before_connecting() -> None:
    for args in (["--agent", "nope"], ["--module", "nope"]):
        result = runner.invoke(app, ["images", "build", *args], env=_env())
        assert result.exit_code == 2, result.output


def test_images_gc_refuses_a_negative_age() -> None:
    result = runner.invoke(app, ["images", "gc", "--max-age-days", "-1"], env=_env())
    assert result.exit_code == 2


def test_ledger_key_is_the_serve_owners() -> None:
    assert cli_images.ledger_key(Settings(owner="box")) == "codeyard:images:box"


# --- doctor additions -----------------------------------------------------------------------


def test_runtimes_check_lists_what_is_missing_with_a_fix() -> None:
    assert runtimes_check(["runc", "runsc", "sysbox-runc"]).status is Status.OK
    check = runtimes_check(["runc"])
    assert check.status is Status.WARN
    assert not check.required
    assert "no sysbox-runc" in check.detail
    assert "no runsc" in check.detail
    assert "sysbox" in check.fix


def test_base_image_check_points_at_images_build() -> None:
    assert base_image_check("ubuntu-noble", True).status is Status.OK
    missing = base_image_check("ubuntu-noble", False)
    assert missing.status is Status.MISSING
    assert not missing.failed
    assert missing.fix == "codeyard images build"


def test_redis_server_check_only_without_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with_url = Settings(redis_url="redis://localhost:6379/0")
    assert check_redis_server(with_url).status is Status.SKIP
    monkeypatch.setattr("shutil.which", lambda _: None)
    check = check_redis_server(Settings(redis_url=None))
    assert check.status is Status.MISSING
    assert "apt-get install redis-server" in check.fix
