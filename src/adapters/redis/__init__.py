"""Redis adapters (redis.asyncio): the event bus on Redis streams.

Constructors take a client; nothing connects at import time.
"""

from codeyard.adapters.redis.event_bus import RedisEventBus

__all__ = ["RedisEventBus"]
