"""NetworkPolicy enforced for real: codeyard networks plus the host firewall (iptables).

Two throwaway HTTP servers listen on the host (0.0.0.0, free ports). Busybox containers
try to fetch from them through the gateway of their network; a container on the default
bridge is the control that proves the servers answer containers at all. EGRESS keeping
outbound access is shown by fetching a plain-HTTP page from the Debian mirror (the image
builds need that same access).
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import docker
import pytest

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.networks import (
    CHAIN,
    EGRESS_NETWORK,
    Iptables,
    network_names,
    remove_networks,
)
from codeyard.domain.container import LABEL_OWNER, ContainerSpec
from codeyard.domain.errors import InvalidRequest, ServiceUnavailable
from codeyard.domain.worker import NetworkPolicy

pytestmark = [pytest.mark.anyio]

DOCKER0_GATEWAY = "172.17.0.1"
MIRROR = "http://deb.debian.org/debian/"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello-from-host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


@pytest.fixture(scope="module")
def host_ports() -> Iterator[tuple[int, int]]:
    """Two HTTP servers on the host, on every address: (allowed port, other port)."""
    servers = [http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Hello) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def owner() -> str:
    return f"test-net-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def runtime(
    docker_client: docker.DockerClient, test_image: str, owner: str
) -> AsyncIterator[DockerContainerRuntime]:
    rt = DockerContainerRuntime(docker_client, owner=owner)
    try:
        yield rt
    finally:
        with anyio.CancelScope(shield=True):
            for info in await rt.list({LABEL_OWNER: owner}):
                await rt.remove(info.id)
            await remove_networks(docker_client, owner=owner)


async def fetch(rt: DockerContainerRuntime, image: str, url: str, **spec: Any) -> str:
    """What a container under ``spec`` prints when fetching ``url``: the body or ``rc=N``.

    wget is not PID 1 (busybox's ``wget -T`` crashes; ``timeout`` bounds it instead), and
    the logs are read after the exit.
    """
    script = f"timeout 8 wget -qO- {url} >/tmp/out 2>&1; rc=$?; head -c 200 /tmp/out; echo rc=$rc"
    info = await rt.create(ContainerSpec(image=image, command=("sh", "-c", script), **spec))
    await rt.start(info.id)
    await rt.wait(info.id, timeout_s=30)
    out = await rt.logs(info.id)
    await rt.remove(info.id)
    return out


def gateway(client: docker.DockerClient, network: str) -> str:
    attrs = client.api.inspect_network(network)
    return str(attrs["IPAM"]["Config"][0]["Gateway"])


def chain_rules(bridge: str) -> list[str]:
    listing = subprocess.run(
        ["iptables", "-w", "-S"], capture_output=True, text=True, check=True
    ).stdout
    ours = (f"-A INPUT -i {bridge} ", f"-A {CHAIN} -i {bridge} ")
    return [line for line in listing.splitlines() if line.startswith(ours)]


async def test_each_policy_reaches_exactly_what_it_allows(
    runtime: DockerContainerRuntime,
    docker_client: docker.DockerClient,
    test_image: str,
    host_ports: tuple[int, int],
) -> None:
    allowed, other = host_ports
    allow = {"network": NetworkPolicy.ALLOWLIST, "allowed_host_ports": (allowed,)}
    # Creating one container of each kind makes the networks, so their gateways exist.
    await runtime.remove((await runtime.create(ContainerSpec(image=test_image, **allow))).id)
    await runtime.remove((await runtime.create(ContainerSpec(image=test_image))).id)
    allow_net, _ = network_names((allowed,))
    egress_gw, allow_gw = gateway(docker_client, EGRESS_NETWORK), gateway(docker_client, allow_net)

    probes: dict[str, tuple[str, dict[str, Any]]] = {
        "none": (f"http://{DOCKER0_GATEWAY}:{allowed}/", {"network": NetworkPolicy.NONE}),
        "egress-own-gw": (f"http://{egress_gw}:{allowed}/", {}),
        "egress-docker0": (f"http://{DOCKER0_GATEWAY}:{allowed}/", {}),
        "egress-internet": (MIRROR, {}),
        "allow-port": (f"http://{allow_gw}:{allowed}/", allow),
        "allow-docker0": (f"http://{DOCKER0_GATEWAY}:{allowed}/", allow),
        "allow-other-port": (f"http://{allow_gw}:{other}/", allow),
    }
    results: dict[str, str] = {}

    async def probe(key: str) -> None:
        url, spec = probes[key]
        results[key] = await fetch(runtime, test_image, url, **spec)

    async with anyio.create_task_group() as tg:
        for key in probes:
            tg.start_soon(probe, key)
    # The control: the same request from the default bridge reaches the host server.
    control = docker_client.containers.run(
        test_image,
        ["sh", "-c", f"timeout 8 wget -qO- http://{DOCKER0_GATEWAY}:{allowed}/; echo rc=$?"],
        remove=True,
        labels={LABEL_OWNER: "test-net-control"},
    )

    assert b"hello-from-host" in control
    for key in ("allow-port", "allow-docker0"):
        assert "hello-from-host" in results[key], (key, results[key])
    assert "rc=0" in results["egress-internet"], results["egress-internet"]
    for key in ("none", "egress-own-gw", "egress-docker0", "allow-other-port"):
        assert "hello-from-host" not in results[key], (key, results[key])
        assert "rc=0" not in results[key], (key, results[key])
    # Refused at once (REJECT), not a 5 s hang; NONE has no route at all.
    assert "refused" in results["egress-own-gw"].lower(), results["egress-own-gw"]


async def test_firewall_rules_are_idempotent_and_scoped(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    port = 40000 + uuid.uuid4().int % 20000
    spec = ContainerSpec(
        image=test_image, network=NetworkPolicy.ALLOWLIST, allowed_host_ports=(port,)
    )
    _, bridge = network_names((port,))
    await runtime.remove((await runtime.create(spec)).id)
    await anyio.to_thread.run_sync(lambda: Iptables().ensure_bridge(bridge, (port,)))  # again
    second = DockerContainerRuntime(docker_client, owner="test-net-other")  # a fresh cache
    await second.remove((await second.create(spec)).id)

    # Exactly one copy, in order, as iptables -S prints them back.
    assert chain_rules(bridge) == [
        f"-A INPUT -i {bridge} -j {CHAIN}",
        f"-A {CHAIN} -i {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {CHAIN} -i {bridge} -p tcp -m tcp --dport {port} -j ACCEPT",
        f"-A {CHAIN} -i {bridge} -j REJECT --reject-with icmp-port-unreachable",
    ]
    assert chain_rules("docker0") == []  # the default bridge stays as Docker made it


async def test_cleanup_removes_networks_and_rules_and_create_recreates_them(
    runtime: DockerContainerRuntime,
    docker_client: docker.DockerClient,
    test_image: str,
    owner: str,
) -> None:
    port = 40000 + uuid.uuid4().int % 20000
    spec = ContainerSpec(
        image=test_image, network=NetworkPolicy.ALLOWLIST, allowed_host_ports=(port,)
    )
    name, bridge = network_names((port,))
    busy = await runtime.create(spec)
    await runtime.start(busy.id)

    assert name not in await remove_networks(docker_client, owner=owner)  # in use: kept
    assert chain_rules(bridge)
    await runtime.remove(busy.id)
    assert name in await remove_networks(docker_client, owner=owner)
    assert chain_rules(bridge) == []
    assert not docker_client.api.networks(names=[name])

    again = await runtime.create(spec)  # its cache still names the removed network
    assert again.ip is None  # created, not started
    assert docker_client.api.networks(names=[name])
    assert len(chain_rules(bridge)) == 4


def test_names_fit_linux_interface_limits() -> None:
    for ports in [(), (1,), (65535, 1, 22), tuple(range(1, 200))]:
        name, bridge = network_names(ports)
        assert len(bridge) <= 15, bridge
        assert name.startswith("codeyard-")
    assert network_names((80, 22)) == network_names((22, 80, 22))
    assert network_names((80,)) != network_names((81,))


def test_ports_require_allowlist_and_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        ContainerSpec(image="i", allowed_host_ports=(80,))
    with pytest.raises(InvalidRequest, match="65535"):
        ContainerSpec(image="i", network=NetworkPolicy.ALLOWLIST, allowed_host_ports=(70000,))


def test_iptables_failure_is_a_typed_error() -> None:
    with pytest.raises(ServiceUnavailable) as missing:
        Iptables("/nonexistent/iptables").check("-S")
    assert missing.value.fields["service"] == "iptables"
    with pytest.raises(ServiceUnavailable) as refused:
        Iptables().check("-A", "NO-SUCH-CHAIN-CODEYARD", "-j", "ACCEPT")
    assert refused.value.fields["detail"]
