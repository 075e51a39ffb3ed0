"""The path of one build, made visible: cache read, single-flight, the priority chain walk, the
gate, commit and assembly, traced through the builder's events.

See docs/how-a-build-works.md. Runs on virtual time: ``python examples/how_a_build_works.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from coalestra import (
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CircuitBreakerPolicy,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SourcePayload,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT")
ETH = ResourceKey("market", "price", "ETHUSDT")
ACCOUNT = ResourceKey("account", "balance", "main")
VALUE = ResourceKey("account", "value", "main")


class Trace:
    """An event sink that prints the engine's events as they happen, with the virtual time."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def emit(self, event_type: str, **payload: Any) -> None:
        if event_type == "resource_resolved":
            detail = f"{payload['resource']} from {payload['source']} ({payload['source_kind']})"
        elif event_type in ("source_failed", "source_circuit_open"):
            detail = f"{payload['source']} -> {payload['resource']}: {payload['error']}"
        elif event_type == "snapshot_built":
            detail = f"{payload['resolved']}/{payload['resources']} resolved"
        elif event_type == "cache_hit":
            return  # one per key served from the cache: too chatty for this tour
        else:
            detail = payload.get("resource", "")
        print(f"   t={self.clock.monotonic():5.2f}  {event_type:<20} {detail}")


async def stream(key: ResourceKey, context: FetchContext) -> float:
    raise ConnectionError("stream disconnected")  # the highest priority source is down


async def bulk_prices(
    keys: Collection[ResourceKey], context: FetchContext
) -> Mapping[ResourceKey, SourcePayload[float]]:
    await asyncio.sleep(0.2)
    started = context.requested_at  # observed when the build asked
    prices = {"BTCUSDT": 65000.0, "ETHUSDT": 3400.0}
    return {key: SourcePayload(prices[key.subject], observed_at=started) for key in keys}


async def account(key: ResourceKey, context: FetchContext) -> float:
    await asyncio.sleep(0.1)
    return 10_000.0


def value(key: ResourceKey, deps: Snapshot, context: FetchContext) -> float:
    return deps.value(ACCOUNT, float) + 0.5 * deps.value(BTC, float)


def make_builder(clock: VirtualClock) -> SnapshotBuilder:
    def is_price(key: ResourceKey) -> bool:
        return key.name == "price"

    fail_fast = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1), circuit=CircuitBreakerPolicy(failure_threshold=2)
    )
    return SnapshotBuilder(
        [
            CallableSource(
                name="stream",
                priority=100,
                supports=is_price,
                fetcher=stream,
                resilience_policy=fail_fast,
            ),
            CallableBatchSource(name="bulk", priority=10, supports=is_price, fetcher=bulk_prices),
            CallableSource(
                name="db", priority=10, supports=lambda key: key == ACCOUNT, fetcher=account
            ),
            CallableDerivedSource(
                name="valuation",
                priority=10,
                supports=lambda key: key == VALUE,
                dependencies=lambda key: [ACCOUNT, BTC],
                deriver=value,
                run_sync_in_thread=False,
            ),
        ],
        clock=clock,
        events=Trace(clock),
        default_policy=FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=30.0),
    )


async def tour() -> None:
    clock = VirtualClock()
    async with make_builder(clock) as builder:
        print("== a cold build: the stream fails, the prices fall through to one bulk call,")
        print("   the derived value waits for its dependencies, which are flights of their own")
        cold = await builder.build([BTC, ETH, VALUE], snapshot_id="cold")
        d = cold.diagnostics
        print(
            f"   sources: {[cold[k].source for k in cold]}; calls {dict(d.source_calls_by_source)},"
            f" batch chunks {d.batch_chunks}, cache writes {d.cache_batch_writes}"
        )
        assert cold[BTC].source == "bulk"

        print("== a warm build: one cache read, no source call")
        warm = await builder.build([BTC, ETH, VALUE])
        assert warm.diagnostics.source_calls == 0

        await asyncio.sleep(6.0)  # past the TTL
        print("== two concurrent builds: the second joins the first's flights")
        first = asyncio.create_task(builder.build([BTC, ETH], snapshot_id="first"))
        await asyncio.sleep(0)
        second = await builder.build([ETH], snapshot_id="second")
        print(f"   the joiner coalesced {second.diagnostics.coalesced_requests} key(s)")
        await first

        await asyncio.sleep(6.0)
        print("== a publication arriving during a fetch: the fetch is served, the cache keeps it")
        fetching = asyncio.create_task(builder.build([ETH], snapshot_id="raced"))
        await asyncio.sleep(0.1)
        await builder.publisher.publish(ETH, 3405.0, source="user-stream")
        raced = await fetching
        print(f"   the build returned {raced.value(ETH)} from {raced[ETH].source}")
        assert raced[ETH].source != "user-stream"
        after = await builder.build([ETH])
        print(f"   the next build returned {after.value(ETH)} from {after[ETH].source}")
        assert after[ETH].source == "user-stream"


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
