"""Worker secrets: resolved from the credential store at a cold create, put into the
container's environment and nowhere else.

Not in the warm pool (standby containers are created before anyone asks for a secret,
and their environment cannot change after creation: :class:`~.pool.WarmPool` leaves specs
with secrets to cold creates), not in the assignment (it travels on the bus), not in
labels (``docker ps`` shows them to anyone), not in the registry (it holds the spec: the
references, names only). The container also gets :data:`SECRET_ENV_VAR` listing the
variables' names, so the worker redacts their values from everything it publishes.

A missing secret fails the create (``SecretNotFound`` names it), before any container.
"""

from __future__ import annotations

from collections.abc import Mapping

from codeyard.domain.container import ContainerSpec
from codeyard.domain.secrets import SECRET_ENV_VAR, check_env_names
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.credential_store import CredentialStore


async def resolve_secrets(store: CredentialStore, spec: WorkerSpec) -> dict[str, str]:
    """``{env: value}`` of ``spec.secrets`` (``SecretNotFound`` for one the store lacks)."""
    check_env_names(ref.env for ref in spec.secrets)
    return {ref.env: await store.get(ref.name) for ref in spec.secrets}


def with_secrets(container: ContainerSpec, secret_env: Mapping[str, str]) -> ContainerSpec:
    """``container`` with ``secret_env`` in its environment (module doc)."""
    if not secret_env:
        return container
    check_env_names(secret_env, reserved=container.env)
    env = {**container.env, **secret_env, SECRET_ENV_VAR: ",".join(sorted(secret_env))}
    # model_copy: the spec was validated already, and a re-validation error could quote env.
    return container.model_copy(update={"env": env})
