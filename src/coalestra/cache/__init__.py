"""The in-process cache and the publisher that pushes events into a cache.

:class:`AsyncMemoryCache` is a bounded LRU of snapshot values with TTL/stale classification,
dependency-aware validation of derived values, authority-aware monotonic writes and payload
isolation. :class:`ResourcePublisher` writes pushed events into any cache, monotonically.
"""

from ._memory import AsyncMemoryCache
from ._publisher import ResourcePublisher
from ._values import CacheStats, PublishResult, PublishStatus, ResourceUpdate

__all__ = [
    "AsyncMemoryCache",
    "CacheStats",
    "PublishResult",
    "PublishStatus",
    "ResourcePublisher",
    "ResourceUpdate",
]
