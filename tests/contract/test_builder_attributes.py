"""Contract facts B-ATTR-1 ... B-ATTR-3: the builder's public attributes, its constructor errors,
and the cache payload-copy settings."""

from __future__ import annotations

from typing import Any

import pytest
from tests.doubles import Events

from coalestra import (
    AsyncMemoryCache,
    AuthorityPolicyResolver,
    CallableSource,
    CapacityController,
    CircuitBreaker,
    FreshnessPolicy,
    InMemoryMetrics,
    NullEventSink,
    NullMetrics,
    ObservationPolicy,
    PolicyResolver,
    ResiliencePolicyResolver,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SourceAuthorityPolicy,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTC")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


def source(name: str = "rest", priority: int = 10) -> CallableSource:
    return CallableSource(
        name=name, priority=priority, supports=lambda _key: True, fetcher=lambda _k, _c: name
    )


# -- B-ATTR-1 ---------------------------------------------------------------------------------


def test_b_attr_1_defaults(clock: VirtualClock) -> None:
    low, high = source("low", 1), source("high", 20)
    b = SnapshotBuilder([low, high], clock=clock, default_policy=POLICY)
    assert b.clock is clock
    assert isinstance(b.policy_resolver, PolicyResolver)
    assert b.policy_resolver.resolve(KEY) == POLICY
    assert isinstance(b.authority_resolver, AuthorityPolicyResolver)
    assert isinstance(b.cache, AsyncMemoryCache)
    assert b.single_flight is not None
    assert b.retry_policy == RetryPolicy()
    assert isinstance(b.circuit_breaker, CircuitBreaker)
    assert isinstance(b.resilience_resolver, ResiliencePolicyResolver)
    assert isinstance(b.metrics, NullMetrics)
    assert isinstance(b.events, NullEventSink)
    assert b.observation_policy == ObservationPolicy()
    assert b.cache_source_support is True
    assert b.source_support_cache_max_entries == 100000
    assert b.manage_lifecycle is False
    assert b.max_concurrency == 8
    assert b.max_pending_tasks == 8
    assert b.sources == (high, low)
    assert isinstance(b.capacity, CapacityController)
    assert b.closed is False


async def test_b_attr_1_given_values(clock: VirtualClock) -> None:
    metrics, events = InMemoryMetrics(), Events()
    resolver = PolicyResolver(POLICY)
    authority = AuthorityPolicyResolver(default=SourceAuthorityPolicy({"rest": 2}))
    observation = ObservationPolicy(future_tolerance_seconds=2.0)
    b = SnapshotBuilder(
        [source()],
        clock=clock,
        policy_resolver=resolver,
        metrics=metrics,
        events=events,
        observation_policy=observation,
        max_concurrency=3,
        max_pending_tasks=2,
        source_support_cache_max_entries=None,
        cache_source_support=False,
        manage_lifecycle=True,
        authority_resolver=authority,
        cache=_AuthorityCache(),
    )
    assert b.policy_resolver is resolver
    assert b.authority_resolver is authority
    assert b.metrics is metrics
    assert b.events is events
    assert b.observation_policy is observation
    assert (b.max_concurrency, b.max_pending_tasks) == (3, 2)
    assert b.source_support_cache_max_entries is None
    assert b.cache_source_support is False
    assert b.manage_lifecycle is True
    assert (await b.capacity.snapshot())["__global__"].limit == 3
    await b.aclose()
    assert b.closed is True


class _AuthorityCache(AsyncMemoryCache):
    validates_source_authority = True


async def test_b_attr_1_publisher_shares_the_builder(clock: VirtualClock) -> None:
    metrics = InMemoryMetrics()
    b = SnapshotBuilder(
        [source()], clock=clock, default_policy=POLICY, metrics=metrics, max_pending_tasks=3
    )
    publisher = type(b.publisher)(
        cache=b.cache,
        clock=b.clock,
        policy_resolver=b.policy_resolver,
        metrics=b.metrics,
        events=b.events,
    )
    result = await publisher.publish(KEY, 42, source="feed", observed_at=clock.now())
    assert result.published
    snapshot = await b.build([KEY])
    assert snapshot.value(KEY) == 42
    assert snapshot[KEY].source == "feed"


# -- B-ATTR-2 ---------------------------------------------------------------------------------


def test_b_attr_2_authority_policy_and_resolver_together() -> None:
    with pytest.raises(ValueError, match="cannot be provided together") as caught:
        SnapshotBuilder(
            [source()],
            authority_policy=SourceAuthorityPolicy({"rest": 1}),
            authority_resolver=AuthorityPolicyResolver(),
        )
    assert (
        str(caught.value) == "authority_policy and authority_resolver cannot be provided together"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_concurrency", 0, "max_concurrency must be at least 1"),
        ("max_pending_tasks", 0, "max_pending_tasks must be at least 1 or None"),
        (
            "source_support_cache_max_entries",
            0,
            "source_support_cache_max_entries must be at least 1 or None",
        ),
        ("cache_max_copy_concurrency", 0, "cache_max_copy_concurrency must be at least 1"),
    ],
)
def test_b_attr_2_limits_below_one(name: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match="must be at least 1") as caught:
        SnapshotBuilder([source()], **{name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "cache_run_payload_copies_in_thread",
            1,
            "cache_run_payload_copies_in_thread must be a boolean or None",
        ),
        ("cache_max_copy_concurrency", 2.0, "cache_max_copy_concurrency must be an integer"),
        ("cache_max_copy_concurrency", "2", "cache_max_copy_concurrency must be an integer"),
    ],
)
def test_b_attr_2_wrong_types(name: str, value: object, message: str) -> None:
    with pytest.raises(TypeError) as caught:
        SnapshotBuilder([source()], **{name: value})
    assert str(caught.value) == message


def test_b_attr_2_authority_rules_need_a_validating_cache() -> None:
    class Plain(AsyncMemoryCache):
        validates_source_authority = False

    with pytest.raises(ValueError, match="validates_source_authority"):
        SnapshotBuilder(
            [source()], authority_policy=SourceAuthorityPolicy({"rest": 1}), cache=Plain()
        )


# -- B-ATTR-3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"cache_run_payload_copies_in_thread": True},
        {"cache_run_payload_copies_in_thread": False},
        {"cache_max_copy_concurrency": 2},
    ],
)
def test_b_attr_3_copy_settings_with_a_custom_cache(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="copy settings") as caught:
        SnapshotBuilder([source()], cache=AsyncMemoryCache(), **settings)
    message = "cache payload copy settings apply only to the default AsyncMemoryCache"
    assert str(caught.value) == message


def test_b_attr_3_defaults_with_a_custom_cache_are_accepted() -> None:
    cache = AsyncMemoryCache()
    b = SnapshotBuilder(
        [source()],
        cache=cache,
        cache_run_payload_copies_in_thread=None,
        cache_max_copy_concurrency=4,
    )
    assert b.cache is cache


def test_b_attr_3_settings_configure_the_default_cache() -> None:
    b = SnapshotBuilder(
        [source()], cache_run_payload_copies_in_thread=True, cache_max_copy_concurrency=2
    )
    assert b.cache.max_copy_concurrency == 2  # type: ignore[attr-defined]
