"""Cached functions: ``@cached`` turns a function into a source plus readers, async and sync.

See docs/everyday.md. Runs on virtual time: ``python examples/cached_functions.py``.
"""

from __future__ import annotations

import asyncio

from coalestra import (
    FreshnessPolicy,
    ResourceNotFound,
    ResourceNotFoundError,
    SnapshotBuilder,
    SyncSnapshotBuilder,
    cached,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

POLICY = FreshnessPolicy(ttl_seconds=30.0, max_stale_seconds=300.0)
ORDERS = {42: ["book", "lamp"]}
calls: list[tuple[int, int]] = []


@cached("shop", "orders", subject="user_id")
async def orders(user_id: int, *, limit: int = 10) -> list[str]:
    calls.append((user_id, limit))
    await asyncio.sleep(0.08)  # a slow service
    if user_id not in ORDERS:
        raise ResourceNotFound(f"no user {user_id}")
    return ORDERS[user_id][:limit]


@cached("geo", "city", subject="code")
def city(code: str) -> str:  # a blocking lookup: runs in a worker thread
    return {"PAR": "Paris", "LIS": "Lisbon"}[code]


async def main() -> None:
    async with SnapshotBuilder([orders], default_policy=POLICY, clock=VirtualClock()) as builder:
        get_orders = orders.bind(builder)
        # 200 concurrent requests for the same user: one call to the service.
        results = await asyncio.gather(*(get_orders(42) for _ in range(200)))
        assert results == [["book", "lamp"]] * 200
        assert calls == [(42, 10)]
        print("key:", orders.key_for(42), "->", results[0], "after", len(calls), "call")
        assert await get_orders(42, limit=1) == ["book"]  # another key: another call
        try:
            await get_orders(7)
        except ResourceNotFoundError as error:
            print("not found:", error)
        try:
            await get_orders(42, limit=[1])  # type: ignore[arg-type]
        except TypeError as error:
            print("refused:", error)


def blocking() -> None:
    with SyncSnapshotBuilder(SnapshotBuilder([city], default_policy=POLICY)) as facade:
        get_city = city.bind(facade)
        print("sync:", get_city("PAR"), get_city(code="LIS"))


if __name__ == "__main__":
    with VirtualTimeRunner() as runner:
        runner.run(main())
    blocking()
