"""Bad input to every public constructor and method: a documented error naming the argument,
and no harm done.

Each row calls one public entry point with one bad argument (wrong type, NaN, inf, negative,
empty string, unknown enum value, a closed object...). It must raise the documented type
(``TypeError``, ``ValueError`` or a ``CoalestraError`` subclass) with a message naming the
argument, and leave everything as it was: the cache's size and statistics, what the source was
asked, the capacity and single-flight state, no task and no thread left, and the builder still
builds. Rows with valid but huge values must simply work.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.orchestration.conftest import Single, keys, make_builder
from tests.reliability.conftest import leftovers, settle, task_baseline

from coalestra.adapters import CallableBatchSource, CallableDerivedSource, CallableSource
from coalestra.cache import AsyncMemoryCache, ResourceUpdate
from coalestra.concurrency import CapacityController, CapacityLimiter
from coalestra.core import (
    AuthorityPolicyResolver,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadIsolationError,
    RefreshMode,
    ResourceKey,
    SessionClosedError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourcePayload,
    SourceProtocolError,
)
from coalestra.observability import (
    BufferedEventSink,
    BufferedMetricsSink,
    InMemoryMetrics,
    NullEventSink,
    NullMetrics,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder, SnapshotSession
from coalestra.resilience import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    ResiliencePolicyResolver,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.sync import SyncSnapshotBuilder
from coalestra.testing import VirtualClock

A, B = keys("A", "B")
NAN, INF = math.nan, math.inf
POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


class Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("no copies")


async def _async_supports(_key: ResourceKey) -> bool:
    return True


def _fetch(_key: ResourceKey, _context: Any) -> int:
    return 1


@dataclass
class Env:
    """A builder with one cached key, its source, an open session and a closed one."""

    clock: VirtualClock
    builder: SnapshotBuilder
    source: Single
    session: SnapshotSession
    closed_session: SnapshotSession
    closed_builder: SnapshotBuilder

    @property
    def cache(self) -> Any:
        return self.builder.cache

    @property
    def later(self) -> float:
        """A timestamp newer than anything the environment cached."""
        return self.clock.now() + 0.5

    def value(self, **changes: Any) -> SnapshotValue[Any]:
        now = self.clock.now()
        fields: dict[str, Any] = {
            "key": A,
            "value": [1],
            "source": "rest",
            "observed_at": now,
            "fetched_at": now,
            "age_seconds": 0.0,
            "stale": False,
            "from_cache": False,
            "latency_ms": 0.0,
        }
        fields.update(changes)
        return SnapshotValue(**fields)


async def make_env(clock: VirtualClock) -> Env:
    source = Single("rest", 1)
    builder = make_builder([source], clock, default_policy=POLICY)
    await builder.build([A])
    session = builder.session()
    closed_session = builder.session()
    await closed_session.close()
    closed_builder = make_builder([Single("rest", 1)], clock)
    await closed_builder.aclose()
    source.calls.clear()
    return Env(clock, builder, source, session, closed_session, closed_builder)


async def state_of(env: Env) -> tuple[Any, ...]:
    """Everything a refused call must leave as it was (statistics read before our own read)."""
    size, stats = await env.cache.size(), await env.cache.stats()
    lookup = await env.cache.get(A, now=env.clock.now(), policy=POLICY)
    health = await env.builder.health_snapshot()
    return (
        size,
        stats,
        lookup.value.version if lookup.value else None,
        tuple(env.source.calls),
        health.singleflight_in_flight,
        dict(await env.builder.capacity_snapshot()),
        tuple(env.session.snapshot().resources),
    )


Call = Callable[[Env], Any]


async def invoke(call: Call, env: Env) -> Any:
    """Call ``call`` (a constructor, a method, or a coroutine method) and await it if needed."""
    result = call(env)
    if inspect.isawaitable(result):
        result = await result
    return result


ROWS: list[tuple[str, Call, type[Exception], str]] = []


def rows(prefix: str, error: type[Exception], argument: str, calls: dict[str, Call]) -> None:
    for suffix, call in calls.items():
        ROWS.append((f"{prefix}-{suffix}", call, error, argument))


# -- value objects ---------------------------------------------------------------------------------

rows("ResourceKey.namespace", TypeError, "namespace", {"int": lambda e: ResourceKey(1, "n")})
rows("ResourceKey.namespace", ValueError, "namespace", {"empty": lambda e: ResourceKey(" ", "n")})
rows("ResourceKey.name", ValueError, "name", {"empty": lambda e: ResourceKey("ns", "")})
rows("ResourceKey.subject", TypeError, "subject", {"none": lambda e: ResourceKey("ns", "n", None)})
rows(
    "ResourceKey.qualifiers",
    TypeError,
    "qualifiers",
    {"ints": lambda e: ResourceKey("ns", "n", "s", [1, 2])},
)
rows(
    "ResourceKey.normalizer",
    TypeError,
    "normalizer",
    {"str": lambda e: ResourceKey("ns", "n", normalizer="lower")},
)
rows(
    "FreshnessPolicy.ttl_seconds",
    ValueError,
    "ttl_seconds",
    {
        "nan": lambda e: FreshnessPolicy(NAN, INF),
        "negative": lambda e: FreshnessPolicy(-1.0, 1.0),
    },
)
rows(
    "FreshnessPolicy.ttl_seconds",
    TypeError,
    "ttl_seconds",
    {"str": lambda e: FreshnessPolicy("5", 5.0)},
)
rows(
    "FreshnessPolicy.max_stale_seconds",
    ValueError,
    "max_stale_seconds",
    {"negative": lambda e: FreshnessPolicy(0.0, max_stale_seconds=-1.0)},
)
rows(
    "FreshnessPolicy.refresh_mode",
    ValueError,
    "refresh_mode",
    {"unknown": lambda e: FreshnessPolicy(1.0, 1.0, refresh_mode="sometimes")},
)
rows(
    "FreshnessPolicy.allow_stale_on_error",
    TypeError,
    "allow_stale_on_error",
    {"str": lambda e: FreshnessPolicy(1.0, 1.0, allow_stale_on_error="yes")},
)
rows(
    "FreshnessPolicy.refresh_ahead_seconds",
    ValueError,
    "refresh_ahead_seconds",
    {
        "above-ttl": lambda e: FreshnessPolicy(
            1.0, 1.0, refresh_mode=RefreshMode.REFRESH_AHEAD, refresh_ahead_seconds=2.0
        )
    },
)
rows(
    "ObservationPolicy.future_tolerance_seconds",
    ValueError,
    "future_tolerance_seconds",
    {"nan": lambda e: ObservationPolicy(NAN), "negative": lambda e: ObservationPolicy(-1.0)},
)
rows(
    "ObservationPolicy.reject_future_observations",
    TypeError,
    "reject_future_observations",
    {"int": lambda e: ObservationPolicy(reject_future_observations=1)},
)
rows("RetryPolicy.max_attempts", ValueError, "max_attempts", {"zero": lambda e: RetryPolicy(0)})
rows("RetryPolicy.max_attempts", TypeError, "max_attempts", {"str": lambda e: RetryPolicy("2")})
rows(
    "RetryPolicy.base_delay_seconds",
    ValueError,
    "base_delay_seconds",
    {
        "nan": lambda e: RetryPolicy(base_delay_seconds=NAN),
        "neg": lambda e: RetryPolicy(base_delay_seconds=-1),
    },
)
rows(
    "RetryPolicy.max_delay_seconds",
    ValueError,
    "max_delay_seconds",
    {"inf": lambda e: RetryPolicy(max_delay_seconds=INF)},
)
rows(
    "RetryPolicy.jitter_ratio",
    ValueError,
    "jitter_ratio",
    {
        "above-one": lambda e: RetryPolicy(jitter_ratio=1.5),
        "negative": lambda e: RetryPolicy(jitter_ratio=-0.1),
    },
)
rows(
    "RetryPolicy.delay_for_attempt",
    TypeError,
    "attempt",
    {"float": lambda e: RetryPolicy().delay_for_attempt(1.0)},  # type: ignore[arg-type]
)
rows(
    "CircuitBreakerPolicy.scope",
    ValueError,
    "scope",
    {"unknown": lambda e: CircuitBreakerPolicy(scope="galaxy")},
)
rows(
    "CircuitBreakerPolicy.failure_threshold",
    ValueError,
    "failure_threshold",
    {"zero": lambda e: CircuitBreakerPolicy(failure_threshold=0)},
)
rows(
    "CircuitBreakerPolicy.recovery_timeout_seconds",
    ValueError,
    "recovery_timeout_seconds",
    {"nan": lambda e: CircuitBreakerPolicy(recovery_timeout_seconds=NAN)},
)
rows(
    "CircuitBreakerPolicy.enabled",
    TypeError,
    "enabled",
    {"str": lambda e: CircuitBreakerPolicy(enabled="no")},
)
rows(
    "SourceResiliencePolicy.retry",
    TypeError,
    "retry",
    {"str": lambda e: SourceResiliencePolicy(retry="x")},
)
rows(
    "SourceResiliencePolicy.circuit",
    TypeError,
    "circuit",
    {"int": lambda e: SourceResiliencePolicy(circuit=5)},
)
rows(
    "SourceAuthorityPolicy.source_ranks",
    ValueError,
    "source_ranks",
    {"empty-name": lambda e: SourceAuthorityPolicy(source_ranks={"": 1})},
)
rows(
    "SourceAuthorityPolicy.source_ranks",
    TypeError,
    "source_ranks",
    {
        "float-rank": lambda e: SourceAuthorityPolicy(source_ranks={"a": 1.5}),
        "list": lambda e: SourceAuthorityPolicy(source_ranks=[1]),
    },
)
rows(
    "SourceAuthorityPolicy.default_rank",
    TypeError,
    "default_rank",
    {"str": lambda e: SourceAuthorityPolicy(default_rank="x")},
)
rows(
    "SnapshotConsistencyPolicy.max_observation_skew_seconds",
    ValueError,
    "max_observation_skew_seconds",
    {
        "nan": lambda e: SnapshotConsistencyPolicy(NAN),
        "neg": lambda e: SnapshotConsistencyPolicy(-1),
    },
)
rows(
    "SnapshotConsistencyPolicy.include_optional_resources",
    TypeError,
    "include_optional_resources",
    {"str": lambda e: SnapshotConsistencyPolicy(1.0, include_optional_resources="x")},
)
rows(
    "SnapshotRequest.required",
    TypeError,
    "required",
    {
        "str": lambda e: SnapshotRequest(required="AB"),
        "ints": lambda e: SnapshotRequest(required=[1]),
    },
)
rows(
    "SnapshotRequest.optional",
    TypeError,
    "optional",
    {"none-item": lambda e: SnapshotRequest(optional=[None])},
)
rows(
    "SnapshotRequest.consistency_policy",
    TypeError,
    "consistency_policy",
    {"str": lambda e: SnapshotRequest(required=[A], consistency_policy="x")},
)
rows(
    "SourcePayload.observed_at",
    ValueError,
    "observed_at",
    {"nan": lambda e: SourcePayload(1, observed_at=NAN)},
)
rows(
    "SourcePayload.metadata",
    TypeError,
    "metadata",
    {"list": lambda e: SourcePayload(1, metadata=[1])},
)
rows("ResourceUpdate.key", TypeError, "key", {"str": lambda e: ResourceUpdate("A", 1, "s")})
rows("ResourceUpdate.source", ValueError, "source", {"empty": lambda e: ResourceUpdate(A, 1, "")})
rows(
    "ResourceUpdate.observed_at",
    ValueError,
    "observed_at",
    {"inf": lambda e: ResourceUpdate(A, 1, "s", INF)},
)
rows(
    "ResourceUpdate.metadata",
    TypeError,
    "metadata",
    {"int": lambda e: ResourceUpdate(A, 1, "s", None, 5)},
)
rows(
    "SnapshotValue.observed_at",
    ValueError,
    "observed_at",
    {"nan": lambda e: e.value(observed_at=NAN)},
)
rows("SnapshotValue.key", TypeError, "key", {"str": lambda e: e.value(key="A")})

# -- resolvers, limiters, breakers, sinks ----------------------------------------------------------

rows("PolicyResolver.default", TypeError, "default", {"str": lambda e: PolicyResolver("x")})
rows(
    "PolicyResolver.overrides",
    TypeError,
    "overrides",
    {"bad": lambda e: PolicyResolver(POLICY, {A: "x"})},
)
rows(
    "PolicyResolver.dynamic",
    TypeError,
    "dynamic",
    {"int": lambda e: PolicyResolver(POLICY, dynamic=5)},
)
rows(
    "AuthorityPolicyResolver.default",
    TypeError,
    "default",
    {"str": lambda e: AuthorityPolicyResolver("x")},
)
rows(
    "ResiliencePolicyResolver.default",
    TypeError,
    "default",
    {"str": lambda e: ResiliencePolicyResolver("x")},
)
rows("CapacityLimiter.limit", ValueError, "limit", {"zero": lambda e: CapacityLimiter(0)})
rows("CapacityLimiter.limit", TypeError, "limit", {"str": lambda e: CapacityLimiter("2")})
rows(
    "CapacityController.global_limit",
    ValueError,
    "global_limit",
    {"zero": lambda e: CapacityController(global_limit=0)},
)
rows(
    "CapacityController.source_limits",
    ValueError,
    "source concurrency limit",  # B-CAP-2's exact message
    {"zero": lambda e: CapacityController(global_limit=1, source_limits={"a": 0})},
)
rows(
    "CircuitBreaker.failure_threshold",
    ValueError,
    "failure_threshold",
    {"zero": lambda e: CircuitBreaker(failure_threshold=0)},
)
rows(
    "CircuitBreaker.recovery_timeout_seconds",
    ValueError,
    "recovery_timeout_seconds",
    {"nan": lambda e: CircuitBreaker(recovery_timeout_seconds=NAN)},
)
rows("CircuitBreaker.clock", TypeError, "clock", {"str": lambda e: CircuitBreaker(clock="x")})
rows(
    "BufferedEventSink.max_pending",
    ValueError,
    "max_pending",
    {"zero": lambda e: BufferedEventSink(NullEventSink(), max_pending=0)},
)
rows(
    "BufferedEventSink.overflow",
    TypeError,  # 0.6 (B7): a string, even a policy's value, is refused
    "overflow",
    {"unknown": lambda e: BufferedEventSink(NullEventSink(), overflow="spill")},
)
rows(
    "BufferedEventSink.downstream", TypeError, "downstream", {"int": lambda e: BufferedEventSink(5)}
)
rows(
    "BufferedMetricsSink.max_pending",
    ValueError,
    "max_pending",
    {"neg": lambda e: BufferedMetricsSink(NullMetrics(), max_pending=-1)},
)
rows(
    "InMemoryMetrics.increment",
    ValueError,
    "value",
    {"negative": lambda e: InMemoryMetrics().increment("m", -1)},
)
rows(
    "InMemoryMetrics.increment",
    ValueError,
    "metric",
    {"empty": lambda e: InMemoryMetrics().increment("")},
)

# -- adapters --------------------------------------------------------------------------------------


def _single(**changes: Any) -> Call:
    options: dict[str, Any] = {"name": "s", "priority": 1, "supports": bool, "fetcher": _fetch}
    options.update(changes)
    return lambda e: CallableSource(**options)


rows("CallableSource.name", ValueError, "name", {"empty": _single(name="")})
rows("CallableSource.name", TypeError, "name", {"int": _single(name=5)})
rows(
    "CallableSource.priority",
    TypeError,
    "priority",
    {"str": _single(priority="1"), "float": _single(priority=1.5)},
)
rows(
    "CallableSource.supports",
    TypeError,
    "supports",
    {"int": _single(supports=5), "async": _single(supports=_async_supports)},
)
rows("CallableSource.fetcher", TypeError, "fetcher", {"none": _single(fetcher=None)})
rows(
    "CallableSource.timeout_seconds",
    ValueError,
    "timeout_seconds",
    {
        "nan": _single(timeout_seconds=NAN),
        "zero": _single(timeout_seconds=0),
        "inf": _single(timeout_seconds=INF),
        "neg": _single(timeout_seconds=-1),
    },
)
rows(
    "CallableSource.queue_timeout_seconds",
    ValueError,
    "queue_timeout_seconds",
    {"zero": _single(queue_timeout_seconds=0.0)},
)
rows(
    "CallableSource.max_concurrency",
    ValueError,
    "max_concurrency",
    {"zero": _single(max_concurrency=0)},
)
rows(
    "CallableSource.run_sync_in_thread",
    TypeError,
    "run_sync_in_thread",
    {"str": _single(run_sync_in_thread="no")},
)
rows(
    "CallableSource.cache_supports", TypeError, "cache_supports", {"int": _single(cache_supports=1)}
)
rows(
    "CallableSource.resilience_policy",
    TypeError,
    "resilience_policy",
    {"str": _single(resilience_policy="x")},
)
rows(
    "CallableBatchSource.max_batch_size",
    ValueError,
    "max_batch_size",
    {
        "zero": lambda e: CallableBatchSource(
            name="b", priority=1, supports=bool, fetcher=_fetch, max_batch_size=0
        )
    },
)
rows(
    "CallableDerivedSource.dependencies",
    TypeError,
    "dependencies",
    {
        "int": lambda e: CallableDerivedSource(
            name="d", priority=1, supports=bool, dependencies=5, deriver=_fetch
        )
    },
)
rows(
    "CallableDerivedSource.deriver",
    TypeError,
    "deriver",
    {
        "none": lambda e: CallableDerivedSource(
            name="d", priority=1, supports=bool, dependencies=tuple, deriver=None
        )
    },
)

# -- the cache -------------------------------------------------------------------------------------

rows(
    "AsyncMemoryCache.max_entries",
    ValueError,
    "max_entries",
    {
        "zero": lambda e: AsyncMemoryCache(max_entries=0),
        "neg": lambda e: AsyncMemoryCache(max_entries=-1),
    },
)
rows(
    "AsyncMemoryCache.max_entries",
    TypeError,
    "max_entries",
    {
        "float": lambda e: AsyncMemoryCache(max_entries=1.5),
        "str": lambda e: AsyncMemoryCache(max_entries="10"),
    },
)
rows(
    "AsyncMemoryCache.payload_copier",
    TypeError,
    "payload_copier",
    {"int": lambda e: AsyncMemoryCache(payload_copier=5)},
)
rows(
    "AsyncMemoryCache.run_payload_copies_in_thread",
    TypeError,
    "run_payload_copies_in_thread",
    {"str": lambda e: AsyncMemoryCache(run_payload_copies_in_thread="yes")},
)
rows(
    "AsyncMemoryCache.max_copy_concurrency",
    ValueError,
    "max_copy_concurrency",
    {"zero": lambda e: AsyncMemoryCache(max_copy_concurrency=0)},
)
rows(
    "cache.get",
    TypeError,
    "key",
    {"str": lambda e: e.cache.get("A", now=e.clock.now(), policy=POLICY)},
)
rows("cache.get", ValueError, "now", {"nan": lambda e: e.cache.get(A, now=NAN, policy=POLICY)})
rows(
    "cache.get",
    TypeError,
    "policy",
    {"none": lambda e: e.cache.get(A, now=e.clock.now(), policy=None)},
)
rows(
    "cache.get_many",
    TypeError,
    "keys",
    {"str": lambda e: e.cache.get_many("AB", now=e.clock.now(), policies={})},
)
rows(
    "cache.get_many",
    ValueError,
    "now",
    {"inf": lambda e: e.cache.get_many([A], now=INF, policies={A: POLICY})},
)
rows(
    "cache.get_many",
    KeyError,
    "missing freshness policies",
    {"missing": lambda e: e.cache.get_many([A], now=e.clock.now(), policies={})},
)
rows("cache.set", TypeError, "value", {"str": lambda e: e.cache.set("x")})
rows(
    "cache.set",
    PayloadIsolationError,
    "payload",
    # Only a winning candidate is copied (B-CACHE-12), so this one is newer than A's.
    {"uncopyable": lambda e: e.cache.set(e.value(value=Uncopyable(), observed_at=e.later))},
)
rows("cache.set_many", TypeError, "values", {"ints": lambda e: e.cache.set_many([1])})
rows(
    "cache.set_if_newer",
    TypeError,
    "force",
    {"int": lambda e: e.cache.set_if_newer(e.value(), force=1)},
)
rows(
    "cache.set_many_if_newer",
    TypeError,
    "replace_equal",
    {"str": lambda e: e.cache.set_many_if_newer([e.value()], replace_equal="x")},
)
rows(
    "cache.set_many_if_newer",
    PayloadIsolationError,
    "payload",
    {
        "one-uncopyable": lambda e: e.cache.set_many_if_newer(
            [e.value(key=B), e.value(value=Uncopyable(), observed_at=e.later)]
        )
    },
)
rows("cache.invalidate", TypeError, "key", {"int": lambda e: e.cache.invalidate(1)})
rows(
    "cache.invalidate_many",
    TypeError,
    "keys",
    {
        "str": lambda e: e.cache.invalidate_many("AB"),
        "one-bad": lambda e: e.cache.invalidate_many([A, 1]),
    },
)
rows(
    "cache.invalidate_matching",
    TypeError,
    "predicate",
    {"int": lambda e: e.cache.invalidate_matching(5)},
)
rows(
    "cache.invalidate_namespace",
    ValueError,
    "namespace",
    {"empty": lambda e: e.cache.invalidate_namespace("")},
)
rows(
    "cache.invalidate_namespace",
    ValueError,
    "name",
    {"empty": lambda e: e.cache.invalidate_namespace("market", name="")},
)
rows(
    "cache.prune",
    ValueError,
    "now",
    {"nan": lambda e: e.cache.prune(now=NAN, policy_resolver=PolicyResolver(POLICY))},
)
rows(
    "cache.prune",
    TypeError,
    "policy_resolver",
    {"int": lambda e: e.cache.prune(now=1.0, policy_resolver=5)},
)

# -- the publisher ---------------------------------------------------------------------------------


def _publish(**changes: Any) -> Call:
    def call(e: Env) -> Any:
        options: dict[str, Any] = {"source": "stream"}
        options.update(changes)
        key = options.pop("key", A)
        value = options.pop("value", [2])
        return e.builder.publisher.publish(key, value, **options)

    return call


rows("publish", TypeError, "key", {"str": _publish(key="A")})
rows("publish", ValueError, "source", {"empty": _publish(source="")})
rows("publish", TypeError, "source", {"int": _publish(source=5)})
rows(
    "publish",
    ValueError,
    "observed_at",
    {"nan": _publish(observed_at=NAN), "inf": _publish(observed_at=INF)},
)
rows("publish", ValueError, "observed_at", {"str": _publish(observed_at="now")})
rows("publish", TypeError, "metadata", {"list": _publish(metadata=[1])})
rows("publish", TypeError, "force", {"int": _publish(force=1)})
rows("publish", TypeError, "replace_equal", {"str": _publish(replace_equal="y")})
rows(  # only a winning publication is copied (B-CACHE-12): force it past A's revision
    "publish",
    PayloadIsolationError,
    "payload",
    {"uncopyable": _publish(value=Uncopyable(), force=True)},
)
rows(
    "publish",
    SourceProtocolError,
    "in the future",
    {"far-future": lambda e: _publish(observed_at=e.clock.now() + 1000)(e)},
)
rows(
    "publish_update",
    TypeError,
    "update",
    {"str": lambda e: e.builder.publisher.publish_update("x")},
)
rows(
    "publish_many",
    TypeError,
    "updates",
    {
        "str": lambda e: e.builder.publisher.publish_many("AB"),
        "ints": lambda e: e.builder.publisher.publish_many([1]),
    },
)
rows(
    "publish_many",
    SourceProtocolError,
    "in the future",
    {
        "one-future": lambda e: e.builder.publisher.publish_many(
            [ResourceUpdate(B, 1, "s"), ResourceUpdate(A, 2, "s", e.clock.now() + 1000)]
        )
    },
)
rows(
    "publish_many",
    PayloadIsolationError,
    "payload",
    {
        "one-uncopyable": lambda e: e.builder.publisher.publish_many(
            [ResourceUpdate(B, 1, "s"), ResourceUpdate(A, Uncopyable(), "s")], force=True
        )
    },
)
rows("publisher.invalidate", TypeError, "key", {"int": lambda e: e.builder.publisher.invalidate(1)})
rows(
    "publisher.invalidate",
    TypeError,
    "reason",
    {"int": lambda e: e.builder.publisher.invalidate(A, reason=5)},
)
rows(
    "publisher.invalidate_many",
    TypeError,
    "keys",
    {"one-bad": lambda e: e.builder.publisher.invalidate_many([A, 1])},
)

# -- the builder -----------------------------------------------------------------------------------


def _builder(**options: Any) -> Call:
    def call(e: Env) -> Any:
        sources = options.pop("sources", [Single("rest", 1)])
        return SnapshotBuilder(sources, clock=e.clock, **options)

    return call


rows(
    "SnapshotBuilder.sources",
    TypeError,
    "sources",
    {"none": _builder(sources=None), "str": _builder(sources="abc")},
)
rows(
    "SnapshotBuilder.sources",
    ValueError,
    "source names must be unique",  # B-SRC-1's exact message
    {"duplicate": _builder(sources=[Single("x", 1), Single("x", 2)])},
)
rows(
    "SnapshotBuilder.max_concurrency",
    ValueError,
    "max_concurrency",
    {"zero": _builder(max_concurrency=0), "neg": _builder(max_concurrency=-1)},
)
rows(
    "SnapshotBuilder.max_concurrency",
    TypeError,
    "max_concurrency",
    {"float": _builder(max_concurrency=1.5), "nan": _builder(max_concurrency=NAN)},
)
rows(
    "SnapshotBuilder.max_pending_tasks",
    ValueError,
    "max_pending_tasks",
    {"zero": _builder(max_pending_tasks=0)},
)
rows(
    "SnapshotBuilder.source_concurrency",
    ValueError,
    "source_concurrency",
    {"unknown": _builder(source_concurrency={"nope": 1})},
)
rows(
    "SnapshotBuilder.source_concurrency",
    ValueError,
    "source concurrency limit",  # B-CAP-2's exact message
    {"zero": _builder(source_concurrency={"rest": 0})},
)
rows(
    "SnapshotBuilder.source_resilience",
    ValueError,
    "source_resilience",
    {"unknown": _builder(source_resilience={"nope": SourceResiliencePolicy()})},
)
rows(
    "SnapshotBuilder.default_policy",
    TypeError,
    "default_policy",
    {"str": _builder(default_policy="x")},
)
rows(
    "SnapshotBuilder.clock",
    TypeError,
    "clock",
    {"object": lambda e: SnapshotBuilder([Single("rest", 1)], clock=object())},
)
rows(
    "SnapshotBuilder.observation_policy",
    TypeError,
    "observation_policy",
    {"str": _builder(observation_policy="x")},
)
rows(
    "SnapshotBuilder.circuit_breaker",
    TypeError,
    "circuit_breaker",
    {"str": _builder(circuit_breaker="x")},
)
rows("SnapshotBuilder.retry_policy", TypeError, "retry_policy", {"str": _builder(retry_policy="x")})
rows(
    "SnapshotBuilder.authority_policy",
    TypeError,
    "authority_policy",
    {"str": _builder(authority_policy="x")},
)
rows(
    "SnapshotBuilder.payload_copier",
    TypeError,
    "payload_copier",
    {"int": _builder(payload_copier=5)},
)
rows("SnapshotBuilder.cache", TypeError, "cache", {"object": _builder(cache=object())})
rows(
    "SnapshotBuilder.cache_source_support",
    TypeError,
    "cache_source_support",
    {"str": _builder(cache_source_support="yes")},
)
rows(
    "SnapshotBuilder.source_support_cache_max_entries",
    ValueError,
    "source_support_cache_max_entries",
    {"zero": _builder(source_support_cache_max_entries=0)},
)
rows(
    "SnapshotBuilder.cache_max_copy_concurrency",
    ValueError,
    "cache_max_copy_concurrency",
    {"zero": _builder(cache_max_copy_concurrency=0)},
)
rows(
    "SnapshotBuilder.manage_lifecycle",
    TypeError,
    "manage_lifecycle",
    {"str": _builder(manage_lifecycle="yes")},
)
rows("SnapshotBuilder.metrics", TypeError, "metrics", {"str": _builder(metrics="x")})
rows("SnapshotBuilder.events", TypeError, "events", {"str": _builder(events="x")})
rows(
    "build.keys",
    TypeError,
    "keys",
    {
        "none": lambda e: e.builder.build(None),
        "str": lambda e: e.builder.build("AB"),
        "one-bad": lambda e: e.builder.build([A, None]),
    },
)
rows("build.strict", TypeError, "strict", {"str": lambda e: e.builder.build([A], strict="yes")})
rows(
    "build.deadline_seconds",
    ValueError,
    "deadline_seconds",
    {
        "nan": lambda e: e.builder.build([B], deadline_seconds=NAN),
        "inf": lambda e: e.builder.build([B], deadline_seconds=INF),
        "zero": lambda e: e.builder.build([B], deadline_seconds=0),
        "neg": lambda e: e.builder.build([B], deadline_seconds=-1),
    },
)
rows(
    "build.deadline_seconds",
    TypeError,
    "deadline_seconds",
    {"str": lambda e: e.builder.build([B], deadline_seconds="1")},
)
rows(
    "build.metadata", TypeError, "metadata", {"list": lambda e: e.builder.build([B], metadata=[1])}
)
rows(
    "build.snapshot_id",
    TypeError,
    "snapshot_id",
    {"int": lambda e: e.builder.build([B], snapshot_id=5)},
)
rows("build_request.request", TypeError, "request", {"str": lambda e: e.builder.build_request("x")})
rows(
    "build_request.request",
    ValueError,
    "request",
    {"empty": lambda e: e.builder.build_request(SnapshotRequest())},
)
rows(
    "build_request.deadline_seconds",
    ValueError,
    "deadline_seconds",
    {"nan": lambda e: e.builder.build_request(SnapshotRequest(required=[B]), deadline_seconds=NAN)},
)
rows(
    "session.deadline_seconds",
    ValueError,
    "deadline_seconds",
    {"neg": lambda e: e.builder.session(deadline_seconds=-1)},
)
rows("session.metadata", TypeError, "metadata", {"int": lambda e: e.builder.session(metadata=5)})
rows(
    "closed builder",
    SessionClosedError,
    "closed",
    {
        "build": lambda e: e.closed_builder.build([A]),
        "session": lambda e: e.closed_builder.session(),
    },
)
rows(
    "closed builder",
    SessionClosedError,
    "closed",
    {"build_request": lambda e: e.closed_builder.build_request(SnapshotRequest(required=[A]))},
)

# -- sessions --------------------------------------------------------------------------------------

rows("session.resolve", TypeError, "keys", {"int": lambda e: e.session.resolve(5)})
rows("session.resolve", TypeError, "strict", {"str": lambda e: e.session.resolve([B], strict="x")})
rows(
    "session.resolve",
    TypeError,
    "retry_errors",
    {"int": lambda e: e.session.resolve([B], retry_errors=1)},
)
rows(
    "session.resolve_request",
    TypeError,
    "request",
    {"str": lambda e: e.session.resolve_request("x")},
)
rows(
    "session.revalidate",
    TypeError,
    "consistency_policy",
    {"str": lambda e: e.session.revalidate([A], consistency_policy="x")},
)
rows(
    "session.revalidate",
    TypeError,
    "force_refresh",
    {"str": lambda e: e.session.revalidate([A], force_refresh="x")},
)
rows("session.revalidate", TypeError, "keys", {"one-bad": lambda e: e.session.revalidate([A, "B"])})
rows(
    "closed session",
    SessionClosedError,
    "closed",
    {
        "resolve": lambda e: e.closed_session.resolve([B]),
        "revalidate": lambda e: e.closed_session.revalidate([A]),
        "snapshot": lambda e: e.closed_session.snapshot(),
    },
)

# -- the synchronous facade ------------------------------------------------------------------------

rows(
    "SyncSnapshotBuilder.builder", TypeError, "builder", {"str": lambda e: SyncSnapshotBuilder("x")}
)
rows(
    "SyncSnapshotBuilder.shutdown_timeout_seconds",
    ValueError,
    "shutdown_timeout_seconds",
    {"neg": lambda e: SyncSnapshotBuilder(e.builder, shutdown_timeout_seconds=-1)},
)
rows(
    "SyncSnapshotBuilder.max_pending_submissions",
    ValueError,
    "max_pending_submissions",
    {"zero": lambda e: SyncSnapshotBuilder(e.builder, max_pending_submissions=0)},
)
rows(
    "SyncSnapshotBuilder.builder",
    SessionClosedError,
    "closed",
    {"closed": lambda e: SyncSnapshotBuilder(e.closed_builder)},
)


def _closed_facade(e: Env, use: Callable[[SyncSnapshotBuilder], Any]) -> Any:
    """Close a synchronous facade, then ``use`` it: in a thread of its own, since the facade
    refuses to block a running event loop."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            facade = SyncSnapshotBuilder(make_builder([Single("rest", 1)], e.clock))
            facade.close()
            use(facade)
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


rows(
    "closed SyncSnapshotBuilder",
    SessionClosedError,
    "closed",
    {
        "build": lambda e: _closed_facade(e, lambda f: f.build([A])),
        "session": lambda e: _closed_facade(e, lambda f: f.session()),
        "publish": lambda e: _closed_facade(e, lambda f: f.publisher.publish(A, 1, source="s")),
        "submit": lambda e: _closed_facade(
            e, lambda f: f.publisher.submit_publish(A, 1, source="s")
        ),
    },
)


# Rows pinned as strict xfails while a library bug is open ("BUG: ..."); empty when none is.
KNOWN_BUGS: dict[str, str] = {}


def _marks(name: str) -> list[pytest.MarkDecorator]:
    reason = KNOWN_BUGS.get(name)
    return [] if reason is None else [pytest.mark.xfail(strict=True, reason=reason)]


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        pytest.param(call, error, argument, id=name, marks=_marks(name))
        for name, call, error, argument in ROWS
    ],
)
async def test_bad_input_is_refused_by_name_and_changes_nothing(
    clock: VirtualClock, call: Call, error: type[Exception], argument: str
) -> None:
    env = await make_env(clock)
    tasks, threads = task_baseline(), set(threading.enumerate())
    before = await state_of(env)

    with pytest.raises(error) as caught:
        await invoke(call, env)

    assert argument in str(caught.value), f"{caught.value!r} does not name {argument!r}"
    size, stats, *rest = before
    own_read = dataclasses.replace(stats, hits=stats.hits + 1, fresh_hits=stats.fresh_hits + 1)
    assert await state_of(env) == (size, own_read, *rest)
    assert (await env.builder.build([A, B])).complete  # still builds (B from the source)
    await env.builder.aclose()
    assert await leftovers(env.builder, tasks) == []
    await settle()
    assert [t for t in threading.enumerate() if t not in threads] == []


HUGE: list[tuple[str, Call]] = [
    ("cache-max-entries", lambda e: AsyncMemoryCache(max_entries=10**12)),
    ("limiter", lambda e: CapacityLimiter(10**12)),
    ("retry-attempts", lambda e: RetryPolicy(max_attempts=10**9)),
    ("ttl", lambda e: FreshnessPolicy(ttl_seconds=1e300, max_stale_seconds=1e300)),
    ("builder-concurrency", _builder(max_concurrency=10**9, max_pending_tasks=10**9)),
    (
        "batch-size",
        lambda e: CallableBatchSource(
            name="b", priority=1, supports=bool, fetcher=_fetch, max_batch_size=10**12
        ),
    ),
    ("long-name", lambda e: ResourceKey("n" * 100_000, "price", "s" * 100_000)),
    ("deadline", lambda e: e.builder.build([B], deadline_seconds=1e12)),
    ("deadline-max-float", lambda e: e.builder.build([B], deadline_seconds=1.7e308)),
    ("many-keys", lambda e: e.builder.build([ResourceKey("m", "k", str(i)) for i in range(5000)])),
]


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in HUGE])
async def test_valid_but_huge_values_simply_work(clock: VirtualClock, call: Call) -> None:
    env = await make_env(clock)
    tasks = task_baseline()

    await invoke(call, env)

    assert (await env.builder.build([A, B])).complete
    await env.builder.aclose()
    assert await leftovers(env.builder, tasks) == []


async def test_a_refused_batch_publication_writes_nothing_of_the_batch(clock: VirtualClock) -> None:
    env = await make_env(clock)
    publisher = env.builder.publisher
    updates = [ResourceUpdate(B, 1, "s"), ResourceUpdate(A, Uncopyable(), "s")]

    with pytest.raises(PayloadIsolationError):
        await publisher.publish_many(updates, force=True)  # only winners are copied

    assert (await env.cache.get(B, now=clock.now(), policy=POLICY)).value is None
    await env.builder.aclose()


async def test_a_key_set_to_an_uncopyable_value_keeps_its_previous_revision(
    clock: VirtualClock,
) -> None:
    env = await make_env(clock)
    held = await env.cache.get(A, now=clock.now(), policy=POLICY)

    with pytest.raises(PayloadIsolationError):
        await env.builder.publisher.publish(A, Uncopyable(), source="stream", force=True)

    after = await env.cache.get(A, now=clock.now(), policy=POLICY)
    assert after.value is not None
    assert held.value is not None
    assert after.value.version == held.value.version
    await env.builder.aclose()
