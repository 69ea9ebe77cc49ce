"""DockerNetworks when the engine's address pools are full: unused codeyard networks go."""

from __future__ import annotations

from typing import Any

import anyio
import docker.errors
import pytest

from codeyard.adapters.docker.networks import LABEL_POLICY, DockerNetworks
from codeyard.domain.container import ContainerSpec
from codeyard.domain.worker import NetworkPolicy

pytestmark = pytest.mark.anyio
FULL = "could not find an available, non-overlapping IPv4 address pool among the defaults"


class FakeApi:
    """Two old codeyard networks (one in use) and room for none until one is removed."""

    def __init__(self) -> None:
        self.nets: dict[str, dict[str, Any]] = {
            "old-free": {"Id": "old-free", "Name": "codeyard-allow-old", "in_use": False},
            "old-busy": {"Id": "old-busy", "Name": "codeyard-allow-busy", "in_use": True},
        }
        for net in self.nets.values():
            net["Options"] = {"com.docker.network.bridge.name": f"cy-{net['Id']}"}
            net["Labels"] = {LABEL_POLICY: "allowlist"}

    def inspect_network(self, name: str) -> dict[str, Any]:
        for net in self.nets.values():
            if name in (net["Id"], net["Name"]):
                return net
        raise docker.errors.NotFound("no such network")

    def create_network(self, name: str, **kwargs: Any) -> None:
        if len(self.nets) >= 2:
            raise docker.errors.APIError(FULL)
        self.nets[name] = {"Id": name, "Name": name, "Options": kwargs["options"]}

    def networks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        assert filters == {"label": [LABEL_POLICY]}
        return list(self.nets.values())

    def remove_network(self, net_id: str) -> None:
        if self.nets[net_id].get("in_use"):
            response = type("R", (), {"status_code": 403, "reason": "in use"})()
            raise docker.errors.APIError("has active endpoints", response=response)
        del self.nets[net_id]


class FakeIptables:
    def __init__(self) -> None:
        self.removed: list[str] = []
        self.ensured: list[str] = []

    def ensure_bridge(self, bridge: str, ports: object) -> None:
        self.ensured.append(bridge)

    def remove_bridge(self, bridge: str) -> None:
        self.removed.append(bridge)


async def test_full_pools_drop_unused_codeyard_networks_then_create() -> None:
    api, tables = FakeApi(), FakeIptables()
    client = type("Client", (), {"api": api})()
    networks = DockerNetworks(
        client,
        owner="me",
        limiter=anyio.CapacityLimiter(1),
        iptables=tables,  # type: ignore[arg-type]
    )
    spec = ContainerSpec(image="i", network=NetworkPolicy.ALLOWLIST, allowed_host_ports=(6379,))
    name = await networks.network_mode(spec)
    assert name.startswith("codeyard-allow-")
    assert set(api.nets) == {"old-busy", name}  # the unused one went, the busy one stayed
    assert tables.removed == ["cy-old-free"]
    assert tables.ensured
    assert tables.ensured[-1].startswith("cy-a-")
