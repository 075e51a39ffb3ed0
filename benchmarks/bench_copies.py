"""Payload-copy benchmarks: what the builder's copy runner costs on cold builds.

Each case builds cold keys with ``run_payload_copies_in_thread`` at its default (``None``:
large copies of the built-in copier go to worker threads) and at ``False`` (every copy
inline). Small dicts never reach the runner, so both should cost the same; large payloads
move their copies off the loop. Two figures per case: wall time, and CPU time of the whole
process (worker threads included), which a busy shared machine disturbs much less.
Lower quartile of the rounds, per key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.orchestration import SnapshotBuilder

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


class SmallDicts:
    """A per-key source serving the small mutable dicts users have."""

    name = "small"
    priority = 10

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        return {"symbol": key.subject, "price": 101.5, "levels": [1, 2, 3]}


class LargeDicts(SmallDicts):
    """The same with a 300-row table in each payload (large: copied in a worker thread)."""

    name = "large"

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        return {"symbol": key.subject, "rows": [[i, i] for i in range(300)]}


async def cold(source: type[SmallDicts], count: int, rounds: int, **options: Any) -> str:
    walls: list[float] = []
    cpus: list[float] = []
    for round_ in range(rounds):
        builder = SnapshotBuilder([source()], default_policy=LONG, **options)
        wanted = [ResourceKey("bench", "value", f"r{round_}-{i}") for i in range(count)]
        wall, cpu = time.perf_counter(), time.process_time()
        await builder.build(wanted)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        await builder.aclose()
    walls.sort()
    cpus.sort()
    quartile = len(walls) // 4
    return (
        f"{walls[quartile] * 1e6 / count:.2f} us/key wall, "
        f"{cpus[quartile] * 1e6 / count:.2f} us/key cpu"
    )


async def main() -> None:
    for source, count, rounds in ((SmallDicts, 200, 40), (LargeDicts, 50, 12)):
        default = await cold(source, count, rounds)
        inline = await cold(source, count, rounds, run_payload_copies_in_thread=False)
        print(f"copies.cold_build {count} {source.name} dicts, default (None): {default}")
        print(f"copies.cold_build {count} {source.name} dicts, inline (False): {inline}")


if __name__ == "__main__":
    asyncio.run(main())
