"""Labels every ContainerRuntime adapter puts on the containers it creates."""

from __future__ import annotations

from datetime import datetime

from codeyard.domain.container import LABEL_CREATED, LABEL_OWNER, ContainerSpec
from codeyard.domain.errors import InvalidRequest


def container_labels(spec: ContainerSpec, *, owner: str, now: datetime) -> dict[str, str]:
    """``spec.labels`` unchanged, plus ``LABEL_OWNER`` and ``LABEL_CREATED`` when absent.

    A spec naming another owner is refused: listing by owner (how a control plane finds
    its containers again) would never see that container.
    """
    requested = spec.labels.get(LABEL_OWNER)
    if requested is not None and requested != owner:
        raise InvalidRequest(
            "spec.labels names another owner than this runtime's",
            errors=[{"loc": f"labels.{LABEL_OWNER}", "msg": f"must be {owner!r} or absent"}],
        )
    return {
        LABEL_CREATED: now.isoformat(timespec="microseconds"),
        **spec.labels,
        LABEL_OWNER: owner,
    }
