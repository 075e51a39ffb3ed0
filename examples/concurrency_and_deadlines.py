"""Concurrency and deadlines: capacity waves, batch chunks, per-source timeouts, a build
deadline, and a single-flight joiner that gives up at its own deadline.

See docs/concurrency-and-deadlines.md. Runs on virtual time: each "one second" source call costs
no real time, and the virtual clock shows how long the work would have taken:
``python examples/concurrency_and_deadlines.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from coalestra import (
    CallableBatchSource,
    CallableSource,
    FetchContext,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotDeadlineExceededError,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner


def price(i: int) -> ResourceKey:
    return ResourceKey("market", "price", f"SYM{i}")


def candles(i: int) -> ResourceKey:
    return ResourceKey("market", "ohlc", f"SYM{i}", {"interval": "1m"})


class Rest:
    """One second per call; tracks how many calls ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(1.0)
        finally:
            self.running -= 1
        return 1.0


async def bulk(keys: Collection[ResourceKey], context: FetchContext) -> Mapping[ResourceKey, int]:
    await asyncio.sleep(1.0)
    return dict.fromkeys(keys, len(keys))  # each value: the size of the chunk it came in


async def stuck(key: ResourceKey, context: FetchContext) -> float:
    await asyncio.sleep(60.0)
    return 0.0


def make_builder(clock: VirtualClock, rest: Rest) -> SnapshotBuilder:
    no_retry = SourceResiliencePolicy(retry=RetryPolicy(max_attempts=1))
    return SnapshotBuilder(
        [
            CallableSource(
                name="rest",
                priority=10,
                supports=lambda key: key.name == "price",
                fetcher=rest.fetch,
                max_concurrency=4,
                queue_timeout_seconds=30.0,
            ),
            CallableBatchSource(
                name="bulk",
                priority=10,
                supports=lambda key: key.name == "ohlc",
                fetcher=bulk,
                max_batch_size=10,
            ),
            CallableSource(
                name="stuck",
                priority=10,
                supports=lambda key: key.name == "depth",
                fetcher=stuck,
                timeout_seconds=0.5,
                resilience_policy=no_retry,
            ),
        ],
        clock=clock,
        max_concurrency=8,
    )


async def tour() -> None:
    clock, rest = VirtualClock(), Rest()
    async with make_builder(clock, rest) as builder:
        started = clock.monotonic()
        await builder.build([price(i) for i in range(10)])
        took = clock.monotonic() - started
        print(f"== 10 single calls, 4 at a time: {took:.1f} s, peak concurrency {rest.peak}")
        assert took == 3.0

        started = clock.monotonic()
        snapshot = await builder.build([candles(i) for i in range(25)])
        took = clock.monotonic() - started
        sizes = sorted({value.value for value in snapshot.values()}, reverse=True)
        d = snapshot.diagnostics
        print(
            f"== 25 keys, batches of at most 10: chunks {sizes}, {d.batch_calls} calls in {took} s"
        )
        assert d.batch_chunks == 3

        depth = ResourceKey("market", "depth", "SYM1")
        snapshot = await builder.build([depth], strict=False)
        print(f"== a source timeout: {snapshot.errors[depth]}")

        started = clock.monotonic()
        wanted = [price(i) for i in range(100, 110)]
        snapshot = await builder.build(wanted, strict=False, deadline_seconds=2.5)
        late = [
            key
            for key, error in snapshot.errors.items()
            if isinstance(error, SnapshotDeadlineExceededError)
        ]
        print(
            f"== deadline 2.5 s: returned after {clock.monotonic() - started} s with"
            f" {len(snapshot)} values and {len(late)} keys past the deadline"
        )
        assert len(snapshot) == 8

        # Two builds want the same key: the second joins the first's fetch and waits only until
        # its own (shorter) deadline; the fetch goes on and the first build gets the value.
        key = price(999)
        patient = asyncio.create_task(builder.build([key]))
        await asyncio.sleep(0)  # let the first build start its fetch
        hurried = await builder.build([key], strict=False, deadline_seconds=0.25)
        print(
            f"== single-flight: the joiner gave up with {type(hurried.errors[key]).__name__}"
            f" (coalesced={hurried.diagnostics.coalesced_requests}),"
            f" the owner got {(await patient).value(key)}"
        )

        health = await builder.health_snapshot()
        print(
            f"== health: deadline_exceeded={health.deadline_exceeded_count}"
            f" source_timeouts={health.source_timeout_count} capacity={dict(health.capacity)}"
        )


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
