"""A Redis tier for Coalestra: one cache and one fetch per key across many worker processes.

Install with the ``redis`` extra (``pip install "coalestra[redis]"``, which brings redis-py).

* :class:`RedisCache`: the shared cache, with atomic authority-aware conditional writes (Lua),
  batch reads in one round trip, expiry after TTL plus stale window, derived-value validation,
  and cross-process single-flight through fetch leases (``LeasingCache``).
* :class:`TieredCache`: an in-process memory L1 in front of a :class:`RedisCache`, kept in step
  through Redis pub/sub; L1 hits never touch the network.
* :class:`Serializer`: how entry bodies become bytes. :class:`JsonSerializer` (the default) only
  ever decodes plain data; :class:`PickleSerializer` is an explicit, HMAC-signed opt-in.

See ``docs/running-many-workers.md`` for the protocol and its guarantees.
"""

try:
    import redis as _redis  # noqa: F401  (only to fail early with the install hint below)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'coalestra.integrations.redis needs redis-py: pip install "coalestra[redis]"'
    ) from error

from ._cache import RedisCache
from ._config import DEFAULT_RETENTION
from ._leases import LeaseInfo
from ._serializers import JsonSerializer, PickleSerializer, Serializer
from ._stats import RedisCacheStats, TieredCacheStats
from ._tiered import TieredCache

__all__ = [
    "DEFAULT_RETENTION",
    "JsonSerializer",
    "LeaseInfo",
    "PickleSerializer",
    "RedisCache",
    "RedisCacheStats",
    "Serializer",
    "TieredCache",
    "TieredCacheStats",
]
