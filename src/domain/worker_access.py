"""What a worker process logs in to the event bus with: its own login, not the manager's.

Each worker (and each warm-pool standby slot) gets a login of its own that reaches only its
standby stream and, once assigned, its own input and output streams (issue #9,
"Isolation"). :class:`~codeyard.ports.worker_credentials.WorkerCredentials` makes them.
"""

from __future__ import annotations

from pydantic import SecretStr

from codeyard.domain.base import DomainModel
from codeyard.domain.errors import Unavailable


class WorkerLogin(DomainModel):
    """A worker's event-bus user and password (the password never shows in a repr)."""

    username: str
    password: SecretStr


class WorkerAclUnavailable(Unavailable):
    """The event bus refuses to manage per-worker logins (the manager's user may not run
    ``ACL``, e.g. a managed Redis). Retrying cannot help: turn the feature off."""

    code = "worker_acl_unavailable"
    retryable = False
