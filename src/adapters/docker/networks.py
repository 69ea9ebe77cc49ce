"""Codeyard-managed bridge networks and the host firewall that enforces NetworkPolicy.

Design: engine-wide networks shared by every owner, one per distinct set of allowed host
ports. EGRESS (and ALLOWLIST without ports) joins ``codeyard-egress`` (bridge ``cy-egress``);
ALLOWLIST with ports P joins ``codeyard-allow-<hash(P)>`` (bridge ``cy-a-<hash>``). Shared,
not per owner or per container: Docker's default address pools hold only ~30 bridge
networks, and every test uses its own owner. ``enable_icc=false``: workers on one network
cannot reach each other.

Firewall (iptables, the same binary and backend Docker itself uses): one chain
``CODEYARD-INPUT``; per bridge, INPUT jumps to it for ``-i <bridge>`` and it holds, all
scoped to ``-i <bridge>``: ACCEPT established/related, ACCEPT tcp to each allowed port,
REJECT the rest. Only INPUT (packets addressed to the host itself, on any of its addresses,
including docker0's gateway) is filtered: forwarded traffic to the internet goes through
Docker's own FORWARD/NAT rules, untouched, so EGRESS keeps outbound access. REJECT rather
than DROP: a blocked connection fails at once ("connection refused") instead of hanging an
agent until its timeout. docker0 and the default bridge's rules are never touched. IPv4
only: Docker creates these networks without IPv6.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import docker
import docker.errors

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, translate_error
from codeyard.domain.container import LABEL_OWNER, LABEL_PREFIX, ContainerSpec
from codeyard.domain.errors import Conflict, ServiceUnavailable
from codeyard.domain.worker import NetworkPolicy

T = TypeVar("T")

CHAIN = "CODEYARD-INPUT"
LABEL_POLICY = LABEL_PREFIX + "network-policy"
LABEL_PORTS = LABEL_PREFIX + "allowed-host-ports"
EGRESS_NETWORK = "codeyard-egress"
_EGRESS_BRIDGE = "cy-egress"
_BRIDGE_OPTION = "com.docker.network.bridge.name"
_IPTABLES_TIMEOUT_S = 30.0
_IPTABLES_RACE_ATTEMPTS = 4


def network_names(ports: Sequence[int], bridge_tag: str = "") -> tuple[str, str]:
    """(network name, bridge interface name) for a set of allowed host ports.

    ``bridge_tag`` (<= 4 characters) goes into the interface name only: network names are
    per engine, interface names per host, so two engines on one host need different tags.
    """
    digest = hashlib.sha256(_ports_label(ports).encode()).hexdigest()
    if not bridge_tag:
        if not ports:
            return EGRESS_NETWORK, _EGRESS_BRIDGE
        return f"codeyard-allow-{digest[:10]}", f"cy-a-{digest[:10]}"  # names: <= 15 chars
    if not ports:
        return EGRESS_NETWORK, f"cy{bridge_tag}-egress"
    return f"codeyard-allow-{digest[:10]}", f"cy{bridge_tag}-a-{digest[: 10 - len(bridge_tag)]}"


def _ports_label(ports: Sequence[int]) -> str:
    return ",".join(str(p) for p in sorted(set(ports)))


def bridge_rules(bridge: str, ports: Sequence[int]) -> list[list[str]]:
    """The rules of ``CHAIN`` for one bridge, in order (without ``-A CHAIN``)."""
    scope = ["-i", bridge]
    rules = [[*scope, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]]
    rules += [[*scope, "-p", "tcp", "--dport", str(p), "-j", "ACCEPT"] for p in sorted(set(ports))]
    rules.append([*scope, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"])
    return rules


class Iptables:
    """``iptables`` through a subprocess; ``-w`` waits for the xtables lock Docker also takes."""

    def __init__(self, binary: str = "iptables") -> None:
        self._binary = binary

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self._binary, "-w", *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=_IPTABLES_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceUnavailable(
                "iptables could not run", service="iptables", argv=shlex.join(argv)
            ) from exc

    def check(self, *args: str) -> None:
        done = self.run(*args)
        if done.returncode != 0:
            raise ServiceUnavailable(
                "iptables failed",
                service="iptables",
                argv=shlex.join(args),
                status=done.returncode,
                detail=done.stderr.strip(),
            )

    def exists(self, *args: str) -> bool:
        """Whether ``-C``/``-L`` finds it (exit 1: no; anything else but 0: an error)."""
        done = self.run(*args)
        if done.returncode not in (0, 1):
            raise ServiceUnavailable(
                "iptables failed", service="iptables", argv=shlex.join(args), detail=done.stderr
            )
        return done.returncode == 0

    def ensure_chain(self) -> None:
        if self.exists("-n", "-L", CHAIN):
            return
        done = self.run("-N", CHAIN)
        # Another process may have created it between the two calls.
        if done.returncode != 0 and not self.exists("-n", "-L", CHAIN):
            self.check("-N", CHAIN)

    def ensure_bridge(self, bridge: str, ports: Sequence[int]) -> None:
        """Idempotent: appends only the rules ``-C`` does not find, jump from INPUT last."""
        self.ensure_chain()
        for rule in bridge_rules(bridge, ports):
            if not self.exists("-C", CHAIN, *rule):
                self.check("-A", CHAIN, *rule)
        jump = ["-i", bridge, "-j", CHAIN]
        if not self.exists("-C", "INPUT", *jump):
            self.check("-I", "INPUT", "1", *jump)  # first: before any ACCEPT of the host's

    def remove_bridge(self, bridge: str) -> None:
        """Deletes every rule of INPUT and ``CHAIN`` scoped to ``-i bridge`` (duplicates too)."""
        for chain in ("INPUT", CHAIN):
            listing = self.run("-S", chain)
            if listing.returncode != 0:
                continue  # no chain: nothing to remove
            for line in listing.stdout.splitlines():
                words = shlex.split(line)
                if words[:1] == ["-A"] and _interface(words) == bridge:
                    self.check("-D", *words[1:])


def _interface(words: list[str]) -> str | None:
    return words[words.index("-i") + 1] if "-i" in words[:-1] else None


class DockerNetworks:
    """Creates, on first use, the network a ContainerSpec's policy needs, with its firewall.

    Networks made are remembered in this object; each use checks the network still exists
    (:func:`remove_networks` may have removed it) and makes it again if not. Not noticed:
    rules flushed by someone else while the network stays (a restarted firewall service).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        owner: str,
        limiter: anyio.CapacityLimiter,
        iptables: Iptables | None = None,
        bridge_tag: str = "",
    ) -> None:
        if len(bridge_tag) > 4 or not (bridge_tag.isalnum() or not bridge_tag):
            raise ValueError("bridge_tag: at most 4 letters or digits")
        self._bridge_tag = bridge_tag
        self._api = client.api
        self._owner = owner
        self._limiter = limiter
        self._iptables = iptables or Iptables()
        self._ready: set[str] = set()
        self._lock = anyio.Lock()

    async def network_mode(self, spec: ContainerSpec) -> str:
        """Docker's ``network_mode`` for ``spec``: ``none`` or a codeyard network's name."""
        if spec.network is NetworkPolicy.NONE:
            return "none"
        ports = spec.allowed_host_ports if spec.network is NetworkPolicy.ALLOWLIST else ()
        name, bridge = network_names(ports, self._bridge_tag)
        # Docker checks a network only at start: make sure a remembered one still exists
        # (1.3 ms measured; a full no-op ensure with its iptables checks takes ~9 ms).
        if name in self._ready and await self._run(lambda: self._inspect(name)) is not None:
            return name
        self._ready.discard(name)
        async with self._lock:  # one creator per process; the engine settles the rest
            if name not in self._ready:
                await self._run(lambda: self._ensure(name, bridge, ports))
                self._ready.add(name)
        return name

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except DOCKER_ERRORS as exc:
            raise translate_error(exc) from exc

    def _ensure(self, name: str, bridge: str, ports: Sequence[int]) -> None:
        attrs = self._inspect(name)
        if attrs is None:
            try:
                self._create(name, bridge, ports)
            except docker.errors.APIError as exc:
                if not _pools_exhausted(exc):
                    raise
                # Docker's default pools hold ~30 bridge networks, and every distinct set of
                # allowed ports makes one: drop the codeyard networks nobody uses, retry once.
                self._prune_unused()
                self._create(name, bridge, ports)
            attrs = self._inspect(name)
        found = ((attrs or {}).get("Options") or {}).get(_BRIDGE_OPTION)
        if found != bridge:
            # A foreign network under our name: its traffic would bypass our rules.
            raise Conflict("network exists with another bridge", network=name, bridge=found)
        self._iptables.ensure_bridge(bridge, ports)

    def _prune_unused(self) -> None:
        """Remove every codeyard network (any owner) that no container is attached to."""
        for net in self._api.networks(filters={"label": [LABEL_POLICY]}):
            try:
                self._api.remove_network(net["Id"])
            except docker.errors.APIError as exc:
                if exc.status_code not in (403, 404, 409):  # in use, or gone already
                    raise
                continue
            self._ready.discard(str(net["Name"]))
            bridge = (net.get("Options") or {}).get(_BRIDGE_OPTION)
            if bridge:
                self._iptables.remove_bridge(bridge)

    def _create(self, name: str, bridge: str, ports: Sequence[int]) -> None:
        for attempt in range(1, _IPTABLES_RACE_ATTEMPTS + 1):
            try:
                self._api.create_network(
                    name,
                    driver="bridge",
                    options={
                        _BRIDGE_OPTION: bridge,
                        "com.docker.network.bridge.enable_icc": "false",
                    },
                    labels={
                        LABEL_OWNER: self._owner,
                        LABEL_POLICY: "allowlist" if ports else "egress",
                        LABEL_PORTS: _ports_label(ports),
                    },
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # another process created it meanwhile
                    return
                # Two engines on one host share iptables' FORWARD chain; each re-inserts its
                # DOCKER-ISOLATION jump when it makes a network, and one can fail on the
                # other's change ("Bad rule"). Transient: the next attempt finds it settled.
                if attempt == _IPTABLES_RACE_ATTEMPTS or "iptables" not in str(exc):
                    raise
                time.sleep(0.2 * attempt)
            else:
                return

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self._api.inspect_network(name)
        except docker.errors.NotFound:
            return None
        return attrs


def _pools_exhausted(exc: docker.errors.APIError) -> bool:
    return "non-overlapping" in str(exc) or "address pool" in str(exc)


async def remove_networks(
    client: docker.DockerClient, *, owner: str, iptables: Iptables | None = None
) -> list[str]:
    """Removes the codeyard networks ``owner`` created, and their firewall rules.

    Networks still in use (a container of any owner attached) are kept, with their rules.
    Returns the names removed. Meant for teardown: runtimes recreate a removed network on
    their next create, but a container created and not yet started on it fails to start.
    """
    tables = iptables or Iptables()

    def run() -> list[str]:
        removed: list[str] = []
        found = client.api.networks(filters={"label": [f"{LABEL_OWNER}={owner}", LABEL_POLICY]})
        for net in found:
            try:
                client.api.remove_network(net["Id"])
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code in (403, 409):  # in use: active endpoints
                    continue
                raise
            bridge = (net.get("Options") or {}).get(_BRIDGE_OPTION)
            if bridge:
                tables.remove_bridge(bridge)
            removed.append(str(net["Name"]))
        return removed

    try:
        return await anyio.to_thread.run_sync(run)
    except DOCKER_ERRORS as exc:
        raise translate_error(exc) from exc
