"""PostgreSQL adapters (asyncpg): the work queue, the worker registry and the migrations.

Constructors take an open ``asyncpg.Pool``; nothing connects at import time.
"""

from codeyard.adapters.postgres.migrate import migrate
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue
from codeyard.adapters.postgres.worker_registry import PostgresWorkerRegistry

__all__ = ["PostgresWorkQueue", "PostgresWorkerRegistry", "migrate"]
