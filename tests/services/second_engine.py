"""A second, throw-away Docker engine on this machine: a second "host" for multi-host tests.

It has its own --data-root, --exec-root, --pidfile, unix socket and config file under one
temp dir, and its OWN bridge interface on an unused private /24 (never ``--bridge=none``:
that deletes ``docker0`` of the first engine). Its user-defined networks come from a private
/16 pool of their own, so they never collide with the first engine's networks.

iptables stays enabled, but a starting dockerd FLUSHES the shared chains ``DOCKER`` (filter
and nat) and ``DOCKER-ISOLATION-STAGE-1/2``: the first engine's published ports and network
isolation would vanish. :func:`start_second_engine` therefore snapshots those chains before
the start and re-inserts every rule the start removed. On stop, the rules the second engine
added for its bridge and subnets are deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from tests.services.common import ServiceStartError, stop_process, tail

# The chains a starting dockerd flushes (libnetwork's NewChain flushes an existing chain).
_FLUSHED_CHAINS = {
    "filter": ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"),
    "nat": ("DOCKER",),
}


@dataclass
class SecondEngine:
    """A running second dockerd: ``client`` (sized like the first) and its ``base_url``."""

    client: docker.DockerClient
    base_url: str
    bridge: str
    bridge_subnet: ipaddress.IPv4Network
    pool: ipaddress.IPv4Network
    workdir: Path
    process: subprocess.Popen[bytes]
    started_in: float
    restored_rules: list[tuple[str, str]] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        """The host's address on the engine's bridge (what ``host-gateway`` resolves to)."""
        return str(next(self.bridge_subnet.hosts()))

    def stop(self) -> None:
        """Remove containers and networks, stop the daemon, delete its rules, bridge, dirs."""
        with contextlib.suppress(docker.errors.DockerException, OSError):
            for container in self.client.containers.list(all=True, sparse=True):
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
            # Removing networks through the daemon deletes their iptables rules cleanly.
            for network in self.client.networks.list():
                if network.name not in ("bridge", "host", "none"):
                    with contextlib.suppress(docker.errors.DockerException):
                        network.remove()
        self.client.close()
        stop_process(self.process, signal.SIGTERM, timeout=20.0)
        _delete_rules_matching(self.bridge, (self.bridge_subnet, self.pool))
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        _unmount_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def find_dockerd() -> str | None:
    return shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")


def start_second_engine(binary: str, timeout: float = 30.0) -> SecondEngine:
    """Start a second dockerd on its own bridge; wait until it answers ``ping``."""
    began = time.monotonic()
    bridge_subnet, pool = _free_subnets()
    bridge = f"cyd2-{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="cyd2-"))  # short: unix socket paths max 107 bytes
    (workdir / "daemon.json").write_text("{}")  # ignore /etc/docker/daemon.json
    socket_path = workdir / "docker.sock"
    base_url = f"unix://{socket_path}"
    gateway = next(bridge_subnet.hosts())
    _ip("link", "add", bridge, "type", "bridge")
    process: subprocess.Popen[bytes] | None = None
    try:
        _ip("addr", "add", f"{gateway}/{bridge_subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        before = _chain_rules()
        logfile = workdir / "dockerd.log"
        with logfile.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "--config-file",
                    str(workdir / "daemon.json"),
                    "--data-root",
                    str(workdir / "data"),
                    "--exec-root",
                    str(workdir / "exec"),
                    "--pidfile",
                    str(workdir / "docker.pid"),
                    "-H",
                    base_url,
                    "--bridge",
                    bridge,
                    "--default-address-pool",
                    f"base={pool},size=24",
                    "--iptables=true",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of pytest must not kill it mid-cleanup
            )
        client = _wait_for_engine(base_url, process, logfile, began + timeout)
        restored = _restore_rules(before)
        return SecondEngine(
            client=client,
            base_url=base_url,
            bridge=bridge,
            bridge_subnet=bridge_subnet,
            pool=pool,
            workdir=workdir,
            process=process,
            started_in=time.monotonic() - began,
            restored_rules=restored,
        )
    except BaseException:
        if process is not None:
            stop_process(process, signal.SIGTERM, timeout=20.0)
        _delete_rules_matching(bridge, (bridge_subnet, pool))
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        _unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def copy_image(src: docker.DockerClient, dst: docker.DockerClient, tag: str) -> None:
    """Stream ``docker save`` of ``tag`` from ``src`` into ``docker load`` on ``dst``.

    The tar is never held in memory: the save response is a chunk iterator, and requests
    sends an iterator body with chunked transfer encoding.
    """
    chunks = src.api.get_image(tag, chunk_size=1024 * 1024)
    # docker-py leaves load_image unannotated; it returns an iterator of decoded JSON dicts.
    progress = dst.api.load_image(chunks, quiet=True)  # type: ignore[no-untyped-call]
    for message in progress:
        if isinstance(message, dict) and message.get("error"):
            raise ServiceStartError(f"loading {tag} into the second engine: {message['error']}")
    dst.images.get(tag)  # raises ImageNotFound if the load silently did nothing


def _wait_for_engine(
    base_url: str, process: subprocess.Popen[bytes], logfile: Path, deadline: float
) -> docker.DockerClient:
    while time.monotonic() < deadline and process.poll() is None:
        if Path(base_url.removeprefix("unix://")).exists():
            client = docker.DockerClient(base_url=base_url, max_pool_size=32, timeout=120)
            try:
                client.ping()
            except (docker.errors.DockerException, OSError):
                client.close()
            else:
                return client
        time.sleep(0.05)
    raise ServiceStartError(
        f"the second dockerd did not answer (exit code {process.poll()}); log:\n{tail(logfile)}"
    )


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceStartError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    nets = [ipaddress.ip_interface(line.split()[3]).network for line in out.splitlines()]
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True)
    for line in routes.stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            nets.append(ipaddress.ip_network(dest, strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _free_subnets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A /24 for the bridge (10.231.N.0/24) and a /16 pool (10.N.0.0/16), both unused.

    N is random so concurrent test sessions, each with a second engine, rarely collide.
    """
    used = _used_networks()
    candidates = list(range(100, 230))
    random.shuffle(candidates)
    for n in candidates:
        bridge = ipaddress.IPv4Network(f"10.231.{n}.0/24")
        pool = ipaddress.IPv4Network(f"10.{n}.0.0/16")
        if not any(bridge.overlaps(u) or pool.overlaps(u) for u in used):
            return bridge, pool
    raise ServiceStartError("no unused private subnet for the second engine's bridge")


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


def _chain_rules() -> dict[tuple[str, str], list[str]]:
    """``-A`` rule lines of the chains a starting dockerd flushes, per (table, chain)."""
    rules: dict[tuple[str, str], list[str]] = {}
    for table, chains in _FLUSHED_CHAINS.items():
        for chain in chains:
            out = _iptables("-t", table, "-S", chain).stdout
            rules[(table, chain)] = [ln for ln in out.splitlines() if ln.startswith("-A ")]
    return rules


def _restore_rules(before: dict[tuple[str, str], list[str]]) -> list[tuple[str, str]]:
    """Re-insert, at the top and in their old order, the rules the start flushed away.

    A rule the first engine deleted in the same half second would come back: harmless for
    tests (a stale ACCEPT/DNAT to a gone container), and far rarer than the flush itself.
    """
    after = _chain_rules()
    restored: list[tuple[str, str]] = []
    for (table, chain), rules in before.items():
        missing = [r for r in rules if r not in after.get((table, chain), [])]
        for position, rule in enumerate(missing, start=1):
            spec = rule.split()[2:]  # drop "-A CHAIN"; iptables -S output is space-safe here
            _iptables("-t", table, "-I", chain, str(position), *spec)
            restored.append((table, rule))
    return restored


def _delete_rules_matching(bridge: str, subnets: tuple[ipaddress.IPv4Network, ...]) -> None:
    """Delete every rule (filter and nat) naming ``bridge`` or an address in ``subnets``."""
    for table in ("filter", "nat"):
        for line in _iptables("-t", table, "-S").stdout.splitlines():
            words = line.split()
            if line.startswith("-A ") and any(_names(w, bridge, subnets) for w in words):
                _iptables("-t", table, "-D", *words[1:])


def _names(word: str, bridge: str, subnets: tuple[ipaddress.IPv4Network, ...]) -> bool:
    if word == bridge:
        return True
    try:
        net = ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return isinstance(net, ipaddress.IPv4Network) and any(net.subnet_of(s) for s in subnets)


def _unmount_under(path: Path) -> None:
    """Lazily unmount what the daemon left mounted below ``path`` (deepest first)."""
    with contextlib.suppress(OSError):
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{path}/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
