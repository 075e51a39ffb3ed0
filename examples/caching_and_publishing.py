"""Caching and publishing: TTL and stale windows, refresh modes, pushed events, invalidation,
derived values that follow their dependencies, and cache statistics.

See docs/caching-and-publishing.md. Runs on virtual time, so minutes of TTLs pass at once:
``python examples/caching_and_publishing.py``.
"""

from __future__ import annotations

import asyncio

from coalestra import (
    AsyncMemoryCache,
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    PolicyResolver,
    PublishStatus,
    RefreshMode,
    ResourceKey,
    ResourceUpdate,
    Snapshot,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT")
ETH = ResourceKey("market", "price", "ETHUSDT")
TICKER = ResourceKey("market", "ticker", "BTCUSDT")
INFO = ResourceKey("exchange", "info")
RULES = ResourceKey("exchange", "rules", "BTCUSDT")


class Rest:
    """An in-memory stand-in for a REST API: counts calls and can go down."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        await asyncio.sleep(0.05)
        if self.down:
            raise ConnectionError("rest is down")
        self.calls += 1
        return float(self.calls)


def rules_of(key: ResourceKey, deps: Snapshot, context: FetchContext) -> dict[str, str]:
    info: dict[str, dict[str, str]] = deps.value(INFO, dict)
    return info[key.subject]


REFERENCE_DATA = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=3600.0)


def is_market(key: ResourceKey) -> bool:
    return key.namespace == "market"


def make_builder(rest: Rest, clock: VirtualClock, cache: AsyncMemoryCache) -> SnapshotBuilder:
    policies = PolicyResolver(
        FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=30.0),  # prices: BLOCKING
        overrides={
            TICKER: FreshnessPolicy(
                ttl_seconds=5.0,
                max_stale_seconds=30.0,
                refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE,
            )
        },
        dynamic=lambda key: REFERENCE_DATA if key.namespace == "exchange" else None,
    )
    return SnapshotBuilder(
        [
            CallableSource(
                name="rest",
                priority=10,
                supports=lambda k: k.namespace == "market",
                fetcher=rest.fetch,
            ),
            CallableSource(
                name="exchange-info",
                priority=10,
                supports=lambda k: k == INFO,
                fetcher=lambda key, context: {"BTCUSDT": {"tick": "0.01"}},
                run_sync_in_thread=False,  # an in-memory read: no thread needed
            ),
            CallableDerivedSource(
                name="rules",
                priority=10,
                supports=lambda k: k.namespace == "exchange" and k.name == "rules",
                dependencies=lambda key: [INFO],
                deriver=rules_of,
                run_sync_in_thread=False,
            ),
        ],
        clock=clock,
        cache=cache,
        policy_resolver=policies,
    )


async def freshness(builder: SnapshotBuilder, rest: Rest) -> None:
    print("== freshness (TTL 5 s, stale window 30 s)")
    first = await builder.build([BTC])
    await asyncio.sleep(4)
    cached = await builder.build([BTC])
    await asyncio.sleep(4)
    refetched = await builder.build([BTC])
    rest.down = True
    await asyncio.sleep(10)
    fallback = await builder.build([BTC])
    rest.down = False
    for label, snapshot in (
        ("t=0   cold", first),
        ("t=4   fresh", cached),
        ("t=8   past TTL", refetched),
        ("t=18  rest down", fallback),
    ):
        value = snapshot[BTC]
        print(
            f"   {label:<16} value={value.value} age={value.age_seconds:.2f}s"
            f" from_cache={value.from_cache} stale={value.stale}"
        )
    assert cached[BTC].from_cache
    assert not refetched[BTC].from_cache
    assert fallback[BTC].stale


async def stale_while_revalidate(builder: SnapshotBuilder) -> None:
    print("== stale-while-revalidate")
    await builder.build([TICKER])
    await asyncio.sleep(8)
    served = await builder.build([TICKER])
    await builder.wait_for_refreshes()
    after = await builder.build([TICKER])
    print(
        f"   served stale={served[TICKER].stale} value={served.value(TICKER)} at once,"
        f" refreshed in the background to {after.value(TICKER)}"
    )
    assert served.diagnostics.refresh_scheduled == 1
    assert after.value(TICKER) > served.value(TICKER)


async def publishing(builder: SnapshotBuilder, rest: Rest) -> None:
    print("== publishing pushed events")
    publisher = builder.publisher
    now = builder.clock.now()
    newer = await publisher.publish(BTC, 65000.0, source="stream", observed_at=now)
    older = await publisher.publish(BTC, 64000.0, source="stream", observed_at=now - 2)
    duplicate = await publisher.publish(BTC, 65000.0, source="stream", observed_at=now)
    await asyncio.sleep(1)
    batch = await publisher.publish_many(
        [
            ResourceUpdate(BTC, 65100.0, source="stream"),
            ResourceUpdate(ETH, 3400.0, source="stream"),
        ]
    )
    for label, result in (("newer", newer), ("older", older), ("duplicate", duplicate)):
        print(f"   {label:<10} -> {result.status.value}")
    print(f"   batch      -> {[r.status.value for r in batch.values()]}")
    calls = rest.calls
    snapshot = await builder.build([BTC, ETH])
    print(f"   a build now reads {snapshot.value(BTC)} and {snapshot.value(ETH)} without a call")
    assert older.status is PublishStatus.IGNORED_OLDER
    assert duplicate.status is PublishStatus.IGNORED_DUPLICATE
    assert rest.calls == calls

    await publisher.invalidate(BTC, reason="stream-gap")
    refetched = await builder.build([BTC])
    print(f"   after invalidate(BTC): fetched from {refetched[BTC].source} again")
    assert not refetched[BTC].from_cache


async def derived(builder: SnapshotBuilder) -> None:
    print("== derived values follow their dependencies")
    before = await builder.build([RULES])
    await asyncio.sleep(1)
    await builder.publisher.publish(INFO, {"BTCUSDT": {"tick": "0.1"}}, source="stream")
    after = await builder.build([RULES])
    print(f"   rules {before.value(RULES)} -> {after.value(RULES)} (re-derived, not served stale)")
    assert after.value(RULES) == {"tick": "0.1"}


async def tour() -> None:
    rest, clock, cache = Rest(), VirtualClock(), AsyncMemoryCache(max_entries=1000)
    async with make_builder(rest, clock, cache) as builder:
        await freshness(builder, rest)
        await stale_while_revalidate(builder)
        await publishing(builder, rest)
        await derived(builder)
    dropped = await cache.invalidate_namespace("market", name="price")
    stats = await cache.stats()
    print(f"== cache: dropped {[str(key) for key in dropped]}")
    print(
        f"   size={stats.size} hits={stats.hits} (stale {stats.stale_hits}) misses={stats.misses}"
        f" sets={stats.sets} invalidations={stats.invalidations} expirations={stats.expirations}"
    )


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
