"""Pure mappings of the Docker adapter: spec -> create kwargs, JSON -> ContainerInfo, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import docker.errors
import pytest
import requests
import requests.exceptions

from codeyard.adapters.docker._mapping import (
    create_kwargs,
    info_from_inspect,
    info_from_summary,
    parse_time,
    translate_error,
)
from codeyard.domain.container import ContainerSpec, ContainerState, Mount
from codeyard.domain.errors import (
    AlreadyExists,
    Conflict,
    ContainerNotFound,
    ImageNotFound,
    InvalidRequest,
    RuntimeNotAvailable,
    ServiceUnavailable,
)
from codeyard.domain.worker import NetworkPolicy, Resources


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22T10:38:42.613399519Z", datetime(2026, 11, 22, 10, 38, 42, 613399, UTC)),
        ("2026-11-22T10:38:42Z", datetime(2026, 11, 22, 10, 38, 42, tzinfo=UTC)),
        ("2026-11-22T12:38:42.5+02:00", datetime(2026, 11, 22, 10, 38, 42, 500000, UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_parse_time(raw: str | None, expected: datetime | None) -> None:
    assert parse_time(raw) == expected


def test_create_kwargs_secure_defaults() -> None:
    kwargs = create_kwargs(ContainerSpec(image="img"), {"a": "b"})
    assert kwargs == {
        "image": "img",
        "environment": {},
        "labels": {"a": "b"},
        "user": "1000:1000",
        "mem_limit": 4096 * 1024 * 1024,
        "memswap_limit": 4096 * 1024 * 1024,
        "nano_cpus": 2_000_000_000,
        "pids_limit": 1024,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": False,
        "network_mode": "bridge",
        "init": True,
    }


def test_create_kwargs_everything() -> None:
    spec = ContainerSpec(
        image="img",
        name="w1",
        command=("a", "b"),
        entrypoint=(),
        env={"K": "V"},
        workdir="/w",
        user="worker",
        resources=Resources(cpus=0.25, memory_mb=16, pids=8),
        network=NetworkPolicy.NONE,
        mounts=(
            Mount(target="/tmp", tmpfs_size_mb=64),
            Mount(target="/src", source="/host/src", read_only=True),
            Mount(target="/cache", source="cachevol"),
        ),
        read_only_root=True,
        cap_drop_all=False,
        no_new_privileges=False,
        runtime="runsc",
    )
    kwargs = create_kwargs(spec, {})
    assert kwargs["entrypoint"] == [""]
    assert kwargs["command"] == ["a", "b"]
    assert kwargs["name"] == "w1"
    assert kwargs["nano_cpus"] == 250_000_000
    assert kwargs["network_mode"] == "none"
    assert kwargs["runtime"] == "runsc"
    assert kwargs["read_only"] is True
    assert kwargs["tmpfs"] == {"/tmp": "exec,size=64m"}  # user is a name: no uid option
    bind, volume = kwargs["mounts"]
    assert (bind["Type"], bind["Source"], bind["ReadOnly"]) == ("bind", "/host/src", True)
    assert (volume["Type"], volume["Source"]) == ("volume", "cachevol")
    assert "cap_drop" not in kwargs
    assert "security_opt" not in kwargs


@pytest.mark.parametrize(
    ("user", "options"),
    [("1000:1000", "exec,uid=1000,gid=1000"), ("1000", "exec,uid=1000"), (None, "exec")],
)
def test_tmpfs_belongs_to_a_numeric_user(user: str | None, options: str) -> None:
    spec = ContainerSpec(image="i", user=user, mounts=(Mount(target="/t"),))
    assert create_kwargs(spec, {})["tmpfs"] == {"/t": options}


INSPECT: dict[str, Any] = {
    "Id": "abc",
    "Name": "/w1",
    "Config": {"Image": "img:1", "Labels": {"k": "v"}},
    "State": {
        "Status": "exited",
        "ExitCode": 137,
        "OOMKilled": True,
        "StartedAt": "2026-11-22T10:38:42.613399519Z",
        "FinishedAt": "2026-11-22T10:38:43Z",
    },
    "NetworkSettings": {"IPAddress": "", "Networks": {"bridge": {"IPAddress": ""}}},
}


def test_info_from_inspect() -> None:
    info = info_from_inspect(INSPECT)
    assert (info.id, info.name, info.image, info.state) == ("abc", "w1", "img:1", "exited")
    assert (info.exit_code, info.oom_killed, info.ip) == (137, True, None)
    assert info.labels == {"k": "v"}
    assert info.finished_at == datetime(2026, 11, 22, 10, 38, 43, tzinfo=UTC)


def test_info_from_inspect_running_has_ip_and_no_exit_code() -> None:
    attrs = {
        **INSPECT,
        "State": {"Status": "running", "ExitCode": 0, "FinishedAt": "0001-01-01T00:00:00Z"},
        "NetworkSettings": {"Networks": {"none": {"IPAddress": ""}, "br": {"IPAddress": "1.2"}}},
    }
    info = info_from_inspect(attrs)
    assert (info.state, info.exit_code, info.ip, info.finished_at) == (
        ContainerState.RUNNING,
        None,
        "1.2",
        None,
    )


def test_finished_at_never_precedes_started_at() -> None:
    # Seen on the real engine for `sh -c 'exit 3'`: the exit is stamped before the start.
    state = {
        **INSPECT["State"],
        "StartedAt": "2026-11-22T10:50:02.387365093Z",
        "FinishedAt": "2026-11-22T10:50:02.386715074Z",
    }
    info = info_from_inspect({**INSPECT, "State": state})
    assert info.started_at == info.finished_at


def test_info_from_summary() -> None:
    summary = {"Id": "abc", "Names": ["/w1"], "Image": "img:1", "State": "created", "Labels": None}
    info = info_from_summary(summary)
    assert (info.name, info.state, info.labels, info.exit_code) == ("w1", "created", {}, None)


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("exc", "context", "expected"),
    [
        (_api_error(404, "No such container: x"), {"container_id": "x"}, ContainerNotFound),
        (_api_error(404, "No such image: img"), {"image": "img"}, ImageNotFound),
        (docker.errors.ImageNotFound("No such image"), {"image": "img"}, ImageNotFound),
        (_api_error(409, 'name "/w" is already in use'), {"image": "img"}, AlreadyExists),
        (_api_error(409, "Container x is not running"), {"container_id": "x"}, Conflict),
        (_api_error(400, "Unknown runtime specified runsc"), {"image": "i"}, RuntimeNotAvailable),
        (_api_error(400, "invalid mount config"), {"image": "img"}, InvalidRequest),
        (_api_error(500, "driver failed"), {}, ServiceUnavailable),
        (requests.exceptions.ConnectionError("refused"), {}, ServiceUnavailable),
        (docker.errors.DockerException("no socket"), {}, ServiceUnavailable),
    ],
)
def test_translate_error(exc: Exception, context: dict[str, str], expected: type) -> None:
    error = translate_error(exc, **context)
    assert type(error) is expected
    if isinstance(error, ServiceUnavailable):
        assert error.fields["service"] == "docker"
