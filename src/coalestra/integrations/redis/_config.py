"""The validated configuration of :class:`~coalestra.integrations.redis.RedisCache`, and its
client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from ...cache._checks import require
from ...core import Clock, FreshnessPolicy, FreshnessPolicyProvider, ResourceKey, SystemClock
from ...core._clock import check_clock
from ...core._validation import check_float, check_int
from ._layout import check_prefix
from ._serializers import JsonSerializer, Serializer

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_RETENTION = FreshnessPolicy(ttl_seconds=86400.0, max_stale_seconds=86400.0)
"""Without a ``policy_resolver``, entries stay in Redis for a day after ``observed_at``."""


@final
class FixedPolicy:
    """A :class:`~coalestra.core.FreshnessPolicyProvider` giving every key one policy."""

    __slots__ = ("_policy",)

    def __init__(self, policy: FreshnessPolicy) -> None:
        self._policy = policy

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        """Return the policy (whatever ``key``)."""
        return self._policy


@final
@dataclass(frozen=True, slots=True)
class RedisCacheConfig:
    """The validated constructor arguments of ``RedisCache`` (see its docstring)."""

    prefix: str
    serializer: Serializer
    policy_resolver: FreshnessPolicyProvider
    clock: Clock
    lease_ttl_seconds: float
    poll_interval_seconds: float
    reconnect_interval_seconds: float
    heartbeat_seconds: float
    connect_timeout_seconds: float
    socket_timeout_seconds: float
    future_tolerance_seconds: float
    max_connections: int

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        require("serializer", self.serializer, Serializer, "a Serializer (dumps and loads)")
        require(
            "policy_resolver",
            self.policy_resolver,
            FreshnessPolicyProvider,
            "a FreshnessPolicyProvider (resolve(key) -> FreshnessPolicy) or None",
        )
        check_clock(self.clock)
        for name in (
            "lease_ttl_seconds",
            "poll_interval_seconds",
            "reconnect_interval_seconds",
            "heartbeat_seconds",
            "connect_timeout_seconds",
            "socket_timeout_seconds",
            "future_tolerance_seconds",
        ):
            check_float(name, getattr(self, name), positive=True)
        if self.lease_ttl_seconds < 0.01:
            raise ValueError(f"lease_ttl_seconds must be >= 0.01, got {self.lease_ttl_seconds}")
        check_int("max_connections", self.max_connections, minimum=1)

    @classmethod
    def make(
        cls,
        *,
        prefix: str,
        serializer: Serializer | None,
        policy_resolver: FreshnessPolicyProvider | None,
        clock: Clock | None,
        **timings: float | int,
    ) -> RedisCacheConfig:
        """Fill in the defaults (JSON, a day of retention, the system clock), then validate."""
        return cls(
            prefix=prefix,
            serializer=JsonSerializer() if serializer is None else serializer,
            policy_resolver=FixedPolicy(DEFAULT_RETENTION)
            if policy_resolver is None
            else policy_resolver,
            clock=SystemClock() if clock is None else clock,
            **timings,  # type: ignore[arg-type]
        )


def make_client(url: str | None, client: Redis | None, config: RedisCacheConfig) -> Redis:
    """The client to use: ``client`` as given, or a new one on its own pool for ``url``.

    The new client retries a command once at once when its connection was found closed (a
    pooled connection may have been closed by a server restart), never after a timeout (that
    would double the time a paused Redis holds a caller) and never with backoff: a cache must
    degrade fast, not wait.

    Raises:
        TypeError, ValueError: both or a malformed ``url``, or ``client`` is not a Redis client.
    """
    if client is not None:
        if url is not None:
            raise ValueError("pass url or client, not both")
        require("client", client, Redis, "a redis.asyncio.Redis client")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("client must not decode responses: entries are bytes")
        return client
    if url is None:
        url = DEFAULT_URL
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=config.max_connections,
        timeout=config.socket_timeout_seconds,
        socket_timeout=config.socket_timeout_seconds,
        socket_connect_timeout=config.connect_timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)
