"""The defaults that change behaviour most, shown by running them.

See docs/defaults.md. Runs on virtual time in a few milliseconds: ``python examples/defaults.py``.
"""

from __future__ import annotations

import asyncio
import math

from coalestra import CallableSource, FetchContext, FreshnessPolicy, ResourceKey, SnapshotBuilder
from coalestra.testing import VirtualClock, VirtualTimeRunner

PRICE = ResourceKey("market", "price", "BTCUSDT")


class Rest:
    """Returns 1.0, 2.0, ... and fails while ``down``."""

    def __init__(self) -> None:
        self.calls, self.down = 0, False

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        if self.down:
            raise ConnectionError("rest is down")
        self.calls += 1
        return float(self.calls)


def policies() -> None:
    print("== FreshnessPolicy: max_stale_seconds is a total age and defaults to 0")
    try:
        FreshnessPolicy(5.0)
    except ValueError as error:
        print(f"FreshnessPolicy(5.0) raises: {error}")
    policy = FreshnessPolicy(5.0, 30.0)
    print(f"fresh while age <= {policy.ttl_seconds}, usable up to {policy.max_stale_seconds}")
    forever = FreshnessPolicy(math.inf, math.inf)
    print(f"infinite windows are accepted: {forever.ttl_seconds}, {forever.max_stale_seconds}")


async def builder_default_policy() -> None:
    print("== the builder's policy when none is given: 1 s fresh, usable for 10 s")
    rest = Rest()
    source = CallableSource(name="rest", priority=10, supports=lambda key: True, fetcher=rest.fetch)
    async with SnapshotBuilder([source], clock=VirtualClock()) as builder:
        await builder.build([PRICE])
        await asyncio.sleep(1.0)
        cached = await builder.build([PRICE])
        print(f"at age 1 s: value {cached.value(PRICE)}, from_cache={cached[PRICE].from_cache}")
        rest.down = True
        await asyncio.sleep(5.0)
        fallback = await builder.build([PRICE])
        print(
            f"at age 6 s, source down: value {fallback.value(PRICE)}, stale={fallback[PRICE].stale}"
        )
        await asyncio.sleep(5.0)
        failed = await builder.build([PRICE], strict=False)
        print(f"at age 11 s, source down: failed={PRICE in failed.errors}")
        assert cached[PRICE].from_cache
        assert fallback[PRICE].stale
        assert PRICE in failed.errors


def main() -> None:
    policies()
    with VirtualTimeRunner() as runner:
        runner.run(builder_default_policy())


if __name__ == "__main__":
    main()
