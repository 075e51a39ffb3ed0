"""The validated configuration of the cache and the publisher.

Their constructors take the contract's keyword arguments and turn them at once into one of these
frozen objects; the internals read the configuration, never the raw arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from ..core import (
    AsyncCache,
    AuthorityPolicyProvider,
    Clock,
    EventSink,
    FreshnessPolicyProvider,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    PayloadIsolator,
)
from ..core._clock import check_clock
from ..core._validation import check_bool, check_callable, check_int
from ._checks import require


@final
@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The validated constructor arguments of :class:`AsyncMemoryCache`."""

    max_entries: int | None
    payload_copier: PayloadCopier | None
    run_payload_copies_in_thread: bool | None
    max_copy_concurrency: int

    def __post_init__(self) -> None:
        if self.max_entries is not None and check_int("max_entries", self.max_entries) < 1:
            raise ValueError("max_entries must be at least 1 or None")
        if self.payload_copier is not None:
            check_callable("payload_copier", self.payload_copier)
        if self.run_payload_copies_in_thread is not None:
            check_bool("run_payload_copies_in_thread", self.run_payload_copies_in_thread)
        check_int("max_copy_concurrency", self.max_copy_concurrency, minimum=1)


@final
@dataclass(frozen=True, slots=True)
class PublisherConfig:
    """The validated constructor arguments of :class:`ResourcePublisher`."""

    cache: AsyncCache
    clock: Clock
    policy_resolver: FreshnessPolicyProvider
    metrics: MetricsSink
    events: EventSink
    observation_policy: ObservationPolicy
    lock_stripes: int
    isolator: PayloadIsolator
    authority_resolver: AuthorityPolicyProvider | None
    max_pending_tasks: int
    health_tracker: object | None

    def __post_init__(self) -> None:
        require("cache", self.cache, AsyncCache, "an AsyncCache (get, set, invalidate, clear)")
        check_clock(self.clock)
        require("policy_resolver", self.policy_resolver, FreshnessPolicyProvider, "a resolver")
        require("metrics", self.metrics, MetricsSink, "a MetricsSink")
        require("events", self.events, EventSink, "an EventSink")
        require("observation_policy", self.observation_policy, ObservationPolicy, "a policy")
        if check_int("lock_stripes", self.lock_stripes) < 1:
            raise ValueError("lock_stripes must be at least 1")
        if self.authority_resolver is not None:
            require(
                "authority_resolver",
                self.authority_resolver,
                AuthorityPolicyProvider,
                "an AuthorityPolicyResolver or None",
            )
        if check_int("max_pending_tasks", self.max_pending_tasks) < 1:
            raise ValueError("max_pending_tasks must be at least 1")
        resolver = self.authority_resolver
        if getattr(resolver, "has_rules", resolver is not None) and (
            getattr(self.cache, "validates_source_authority", False) is not True
        ):
            raise ValueError(
                "authority policies require a cache that declares validates_source_authority = True"
            )


def make_isolator(
    copier: PayloadCopier | None, isolator: PayloadIsolator | None
) -> PayloadIsolator:
    """The publisher's isolator: the one given, or one around ``copier`` (not both)."""
    if isolator is None:
        return PayloadIsolator(copier)
    if copier is not None:
        raise ValueError("pass payload_copier or payload_isolator, not both")
    require("payload_isolator", isolator, PayloadIsolator, "a PayloadIsolator or None")
    return isolator
