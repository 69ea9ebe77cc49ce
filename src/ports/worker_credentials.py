"""WorkerCredentials: a login per worker slot, limited to that worker's own streams."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from codeyard.domain.worker_access import WorkerLogin


@runtime_checkable
class WorkerCredentials(Protocol):
    """Contract:

    - A *slot* is what a worker container boots with (``--standby SLOT``): the worker id
      of a cold create, ``pool-*`` for a warm-pool container. Logins belong to one owner
      (the manager that made them); ``slots`` and every other method see only its own.
    - ``issue(slot)`` makes the slot's login (a fresh password each call: an earlier
      login of the slot stops working) allowed ``worker:standby:{slot}`` and nothing
      else; the commands are those a worker needs (stream reads and writes on those
      keys, ``PING``, the event bus' scripts), never key listing, ``FLUSH*``, ``CONFIG``,
      ``ACL`` or pub/sub.
    - ``bind(slot, worker_id)`` adds ``worker:{worker_id}:input`` and ``:output``;
      idempotent; takes effect on connections already logged in (a warm standby is
      connected before it is claimed). Unknown slot: ``NotFound``; a live slot whose
      login the service lost is made again first (as ``restore`` would).
    - ``revoke(slot)`` deletes the login and ends its open connections; idempotent.
      ``issue``, ``bind`` and ``revoke`` of one slot on one instance are ordered: however
      they overlap, each acts as if alone, so a ``bind`` racing a ``revoke`` either binds
      before it or raises ``NotFound``; it never makes the login again.
    - ``keys(slot)``: the keys (or key patterns) the login may touch, sorted; ``NotFound``
      for an unknown slot. ``slots()``: this owner's slots with a login, sorted.
    - ``restore()`` makes again, as they were (same password, same keys), the logins of
      this instance's live slots (issued, not revoked since) that the service lost (a Redis
      restart drops ``ACL SETUSER`` users), and returns those slots, sorted; a login still
      there is left alone, a revoked slot never comes back. Idempotent; ordered with
      ``issue``/``bind``/``revoke`` of each slot like they are with each other. Only what
      this instance issued: a new instance (a restarted manager) restores nothing. The
      instance keeps each password as its SHA-256, never in plain text.
    - ``check()`` raises ``WorkerAclUnavailable`` when logins cannot be managed at all
      (the service refuses ``ACL``), so a manager fails at start, not on the first create.
    - Service unreachable: ``ServiceUnavailable``.
    """

    async def check(self) -> None:
        """Raise ``WorkerAclUnavailable`` unless logins can be made and removed."""
        ...

    async def issue(self, slot: str) -> WorkerLogin:
        """A new login for ``slot``, limited to its standby stream."""
        ...

    async def bind(self, slot: str, worker_id: str) -> None:
        """Let ``slot``'s login use worker ``worker_id``'s input and output streams."""
        ...

    async def revoke(self, slot: str) -> None:
        """Delete ``slot``'s login (no error when there is none)."""
        ...

    async def restore(self) -> tuple[str, ...]:
        """Make again the lost logins of this instance's live slots; the slots restored."""
        ...

    async def keys(self, slot: str) -> tuple[str, ...]:
        """The keys ``slot``'s login may touch."""
        ...

    async def slots(self) -> tuple[str, ...]:
        """This owner's slots that have a login."""
        ...
