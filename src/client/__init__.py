"""The async client an orchestrator embeds to drive codeyard workers.

Start with :class:`CodeyardClient` (``async with CodeyardClient.connect(redis_url) as c``).
"""

from codeyard.client.client import CodeyardClient
from codeyard.client.events import WorkerEvent

__all__ = ["CodeyardClient", "WorkerEvent"]
