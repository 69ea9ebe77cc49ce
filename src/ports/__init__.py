"""Ports: the Protocols the application needs from the outside world. No I/O here."""

from codeyard.ports.clock import Clock
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.code_host import CodeHost
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.event_bus import EventBus
from codeyard.ports.image_cache import ImageCache
from codeyard.ports.process_launcher import ProcessHandle, ProcessLauncher
from codeyard.ports.work_queue import WorkQueue
from codeyard.ports.worker_registry import WorkerRegistry

__all__ = [
    "Clock",
    "CodeAgent",
    "CodeHost",
    "ContainerRuntime",
    "CredentialStore",
    "EventBus",
    "ImageCache",
    "ProcessHandle",
    "ProcessLauncher",
    "WorkQueue",
    "WorkerRegistry",
]
