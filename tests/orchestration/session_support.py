"""Helpers shared by the session tests (imported as ``tests.orchestration.session_support``).

Tiny hand-written sources implementing the source protocols directly, so sessions are tested
on their own; each counts its calls and can be told to fail, sleep or stamp old observations.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from typing import Any

from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey, Snapshot, SourcePayload
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import CircuitBreaker, RetryPolicy
from coalestra.testing import VirtualClock

ACCOUNT = ResourceKey("account", "balance", "main")
POSITION = ResourceKey("account", "position", "BTCUSDT")
OPEN_ORDERS = ResourceKey("account", "orders", "BTCUSDT")
PRICE = ResourceKey("market", "price", "BTCUSDT")
MARKET_HEALTH = ResourceKey("market", "health")
EXPOSURE = ResourceKey("risk", "exposure", "BTCUSDT")  # POSITION x PRICE
LIMIT = ResourceKey("risk", "limit", "BTCUSDT")  # from EXPOSURE
HEADROOM = ResourceKey("risk", "headroom", "BTCUSDT")  # from LIMIT (so EXPOSURE, transitively)
LONG = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=600.0)


class Source:
    """A single-key source serving ``values``; counts calls, can fail, sleep or stamp an
    ``observed_at`` per key."""

    def __init__(
        self,
        values: Mapping[ResourceKey, Any],
        *,
        name: str = "rest",
        delays: Mapping[ResourceKey, float] | None = None,
        observed: Mapping[ResourceKey, float] | None = None,
    ) -> None:
        self.name = name
        self.priority = 10
        self.values = dict(values)
        self.delays = dict(delays or {})
        self.observed = dict(observed or {})
        self.failing: set[ResourceKey] = set()
        self.calls: list[ResourceKey] = []
        self.contexts: list[FetchContext] = []

    def supports(self, key: ResourceKey) -> bool:
        return key in self.values

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[Any]:
        self.calls.append(key)
        self.contexts.append(context)
        if key in self.delays:
            await asyncio.sleep(self.delays[key])
        if key in self.failing:
            raise RuntimeError(f"{key} is down")
        return SourcePayload(copy.deepcopy(self.values[key]), observed_at=self.observed.get(key))

    def count(self, key: ResourceKey) -> int:
        return self.calls.count(key)


Deriver = Callable[[Snapshot], Any]


class Derived:
    """A derived source: ``rules[key] = (dependencies, function of the dependency snapshot)``."""

    def __init__(self, rules: Mapping[ResourceKey, tuple[tuple[ResourceKey, ...], Deriver]]):
        self.name = "derived"
        self.priority = 5
        self.rules = dict(rules)
        self.calls: list[ResourceKey] = []

    def supports(self, key: ResourceKey) -> bool:
        return key in self.rules

    def dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        return self.rules[key][0]

    async def derive(self, key: ResourceKey, snapshot: Snapshot, context: FetchContext) -> Any:
        self.calls.append(key)
        return self.rules[key][1](snapshot)

    def count(self, key: ResourceKey) -> int:
        return self.calls.count(key)


def exposure(snapshot: Snapshot) -> int:
    return int(snapshot.value(POSITION)["qty"] * snapshot.value(PRICE))


def risk_rules() -> Derived:
    """EXPOSURE from POSITION and PRICE, LIMIT from EXPOSURE, HEADROOM from LIMIT."""
    return Derived(
        {
            EXPOSURE: ((POSITION, PRICE), exposure),
            LIMIT: ((EXPOSURE,), lambda s: s.value(EXPOSURE) * 2),
            HEADROOM: ((LIMIT,), lambda s: s.value(LIMIT) + 1),
        }
    )


def make_builder(clock: VirtualClock, *sources: Any, **options: Any) -> SnapshotBuilder:
    """A builder on virtual time: long TTL, no retries, a circuit that never opens."""
    settings: dict[str, Any] = {
        "clock": clock,
        "default_policy": LONG,
        "retry_policy": RetryPolicy(max_attempts=1),
        "circuit_breaker": CircuitBreaker(failure_threshold=1000, clock=clock),
    }
    settings.update(options)
    return SnapshotBuilder(sources, **settings)


async def publish(builder: SnapshotBuilder, key: ResourceKey, value: Any) -> None:
    """Publish ``value`` one virtual second later than anything cached so far."""
    await asyncio.sleep(1)
    result = await builder.publisher.publish(key, value, source="stream")
    assert result.published


def check_consistent(snapshot: Snapshot) -> None:
    """Every derived value in ``snapshot`` was computed from the revisions it holds."""
    for value in snapshot.values():
        for dep, version in value.dependency_versions.items():
            if dep in snapshot:
                assert snapshot[dep].version == version, (value.key, dep)
