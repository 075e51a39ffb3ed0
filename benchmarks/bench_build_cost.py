"""The fixed cost of one build (no targets: they explain bench_builder's stampede, batch window
and parallel figures, which are made of these costs):

- a warm build of 1 key (its one cache read serves it);
- a cold build of 1 key from an in-memory async source (a flight, a task, one write);
- a build joining another build's flight for 10 keys, in two parts: up to its wait (context,
  the cache read of 10 misses, the claims) and after the flight resolves (waking, the 10 reader
  copies, the snapshot and its diagnostics); plain asyncio tasks waiting on one future, for scale.

``--only NAME`` runs the benchmarks whose function name contains NAME.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.orchestration import SnapshotBuilder

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
BUILDS = 500


def keys(count: int, prefix: str = "k") -> list[ResourceKey]:
    return [ResourceKey("bench", "value", f"{prefix}{i}") for i in range(count)]


class GatedSource:
    """An in-memory source whose calls wait until ``opened`` is set (none: they return now)."""

    def __init__(self) -> None:
        self.name = "gated"
        self.priority = 10
        self.opened: asyncio.Event | None = None
        self.calls = 0
        self.all_called: asyncio.Event | None = None  # set once ``expected`` calls are made
        self.expected = 0

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.calls += 1
        if self.all_called is not None and self.calls == self.expected:
            self.all_called.set()
        if self.opened is not None:
            await self.opened.wait()
        return key.subject


async def per_build(run: Any, count: int, rounds: int = 7) -> float:
    """The best time of ``count`` sequential ``run()`` calls, per call, in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            await run()
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / count


async def warm_one_key() -> None:
    builder = SnapshotBuilder([GatedSource()], default_policy=LONG)
    wanted = keys(1)
    await builder.build(wanted)
    cost = await per_build(lambda: builder.build(wanted), 2000)
    print(f"build_cost.warm 1 key: {cost:.2f} us per build")
    await builder.aclose()


async def cold_one_key() -> None:
    builder = SnapshotBuilder([GatedSource()], default_policy=LONG)
    fresh = iter(keys(20_000, prefix="c"))
    cost = await per_build(lambda: builder.build([next(fresh)]), 2000)
    print(f"build_cost.cold 1 key: {cost:.2f} us per build")
    await builder.aclose()


async def _join_round(count: int) -> tuple[float, float]:
    """Seconds for ``BUILDS`` builds to join an owner's flights of ``count`` keys (up to their
    wait), and for them to finish once those flights resolve."""
    source = GatedSource()
    source.opened, source.all_called, source.expected = asyncio.Event(), asyncio.Event(), count
    builder = SnapshotBuilder([source], default_policy=LONG, max_concurrency=count)
    wanted = keys(count)
    owner = asyncio.ensure_future(builder.build(wanted))
    await source.all_called.wait()
    started = time.perf_counter()
    joiners = [asyncio.ensure_future(builder.build(wanted)) for _ in range(BUILDS)]
    await asyncio.sleep(0)  # each joiner runs up to its wait
    waiting = time.perf_counter()
    source.opened.set()
    await asyncio.gather(owner, *joiners)
    done = time.perf_counter()
    await builder.aclose()
    return waiting - started, done - waiting


async def _plain_round() -> tuple[float, float]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait() -> int:
        return await future

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(wait()) for _ in range(BUILDS)]
    await asyncio.sleep(0)
    waiting = time.perf_counter()
    future.set_result(1)
    await asyncio.gather(*tasks)
    return waiting - started, time.perf_counter() - waiting


async def joining_build() -> None:
    rounds = [await _join_round(10) for _ in range(9)]
    plain = [await _plain_round() for _ in range(9)]
    join, wake = (min(part[i] for part in rounds) * 1e6 / BUILDS for i in (0, 1))
    task, woken = (min(part[i] for part in plain) * 1e6 / BUILDS for i in (0, 1))
    print(
        f"build_cost.joining 10 keys: {join:.1f} us to its wait + {wake:.1f} us once resolved "
        f"per build (plain asyncio task on a future: {task:.1f} + {woken:.1f} us)"
    )


BENCHMARKS = (warm_one_key, cold_one_key, joining_build)


async def main(only: str | None) -> None:
    for bench in BENCHMARKS:
        if only is None or only in bench.__name__:
            await bench()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="run the benchmarks whose name contains this")
    asyncio.run(main(parser.parse_args().only))
