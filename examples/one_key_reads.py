"""One-key reads: ``builder.get(key)`` and its blocking twin ``SyncSnapshotBuilder.get``.

See docs/everyday.md. Runs on virtual time: ``python examples/one_key_reads.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuilder,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT")
DOGE = ResourceKey("market", "price", "DOGEUSDT")
PRICES = {"BTCUSDT": 64990.0}
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


def make_builder(calls: list[str], clock: VirtualClock | None = None) -> SnapshotBuilder:
    async def from_rest(key: ResourceKey, context: FetchContext) -> float:
        calls.append(key.subject)
        await asyncio.sleep(0.05)  # a round trip
        return PRICES[key.subject]  # a KeyError for an unknown symbol

    source = CallableSource(name="rest", priority=10, supports=lambda key: True, fetcher=from_rest)
    return SnapshotBuilder([source], default_policy=POLICY, clock=clock)


async def main() -> None:
    calls: list[str] = []
    async with make_builder(calls, VirtualClock()) as builder:
        # Ten concurrent readers of one key: one source call (single-flight), then the cache.
        prices = await asyncio.gather(*(builder.get(BTC, expected_type=float) for _ in range(10)))
        assert prices == [64990.0] * 10
        assert calls == ["BTCUSDT"]
        print("BTC:", await builder.get(BTC), "after", len(calls), "source call")

        error = await failure_of(builder.get(DOGE))  # the key's own error
        print("DOGE failed:", error)
        assert error.key == DOGE
        assert error.failures[0].error_type == "KeyError"


async def failure_of(read: Awaitable[object]) -> ResourceResolutionError:
    try:
        await read
    except ResourceResolutionError as error:
        return error
    raise AssertionError("the read should have failed")


def blocking() -> None:
    calls: list[str] = []
    with SyncSnapshotBuilder(make_builder(calls)) as facade:
        assert facade.get(BTC) == 64990.0
        print("sync BTC:", facade.get(BTC), "after", len(calls), "source call")


if __name__ == "__main__":
    with VirtualTimeRunner() as runner:
        runner.run(main())
    blocking()
