"""In-memory adapters of every port: fakes for fast tests and the embedded default of a
single-process run. Each passes the same contract suite as the real adapter it stands for.
"""

from codeyard.adapters.memory.clock import ManualClock, SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.credential_store import InMemoryCredentialStore
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry

__all__ = [
    "InMemoryContainerRuntime",
    "InMemoryCredentialStore",
    "InMemoryEventBus",
    "InMemoryImageCache",
    "InMemoryWorkQueue",
    "InMemoryWorkerRegistry",
    "ManualClock",
    "ScriptedCodeAgent",
    "SystemClock",
]
