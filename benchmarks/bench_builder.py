"""Engine benchmarks (issue targets on a 2-core machine):

- warm build of 1,000 cached keys: <= 0.5 us per key with immutable payloads, <= 1.5 us per key
  with small flat dict payloads, copy included (issue 14);
- cold build of 200 keys from an in-memory async source: <= 20 us per key; of small dict
  payloads: <= 8 us per key (issue 14), and at 10,000 keys within 1.1x of the cost per key at 100;
- 20 keys from a source sleeping 25 ms each, max_concurrency=20: total <= 26 ms, and at most
  0.5 ms more than plain ``asyncio.gather`` of the same sleeps (issue 14);
- 500 concurrent builds of the same 10 missing keys: exactly 10 source calls; with a 5 ms
  source, <= 20 ms in all (issue 14);
- 5,000 keys through a batch source with max_batch_size=500, one build: <= 40 ms (issue 14);
- 50 concurrent one-key builds on a batch source with batch_window_seconds=0.0: one call of
  50 keys, <= 2 ms (issue 14; without the window: 50 calls of one key);
- cold builds of new keys once the table of supports() answers is full (100,000) and has
  dropped 50,000 cost what they cost while it filled, within 1.5x CPU per key (the rest is the
  garbage collector's larger live set; dropping one answer at a time from the dict's front
  cost 3x, growing with every answer dropped);
- a warm session stage of 1,000 derived keys over 1,000 raw keys (the stage also keeps the
  revisions of their inputs, issue 12): us/key, no target (a plain warm build for scale).

``--only NAME`` runs the benchmarks whose function name contains NAME.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from coalestra.adapters import CallableDerivedSource
from coalestra.cache import AsyncMemoryCache
from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.observability import InMemoryMetrics
from coalestra.orchestration import SnapshotBuilder

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


class MemorySource:
    """An in-memory async single-key source that counts its calls."""

    def __init__(self, name: str = "memory", delay: float = 0.0) -> None:
        self.name = name
        self.priority = 10
        self.delay = delay
        self.calls = 0

    def supports(self, key: ResourceKey) -> bool:
        return key.namespace == "bench"

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return key.subject


class DictSource(MemorySource):
    """The same, serving the small mutable dicts users have (each served value is a copy)."""

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.calls += 1
        return {"symbol": key.subject, "price": 101.5, "levels": [1, 2, 3]}


class QuoteSource(MemorySource):
    """The same, serving small flat quotes (issue 14's "small dict payloads")."""

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.calls += 1
        return {"bid": 1.0, "ask": 1.1, "venue": key.subject, "ts": 123}


class MemoryBatchSource(MemorySource):
    """The same as a batch source."""

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, Any]:
        self.calls += 1
        return {key: key.subject for key in keys}


def keys(count: int, prefix: str = "k") -> list[ResourceKey]:
    return [ResourceKey("bench", "value", f"{prefix}{i}") for i in range(count)]


async def best_of(repeats: int, run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - started)
    return best


async def warm_build() -> None:
    builder = SnapshotBuilder([MemorySource()], default_policy=LONG)
    wanted = keys(1000)
    await builder.build(wanted)
    seconds = await best_of(50, lambda: builder.build(wanted))
    print(f"engine.warm_build 1000 keys: {seconds * 1e6 / 1000:.2f} us/key target<=0.5")
    await builder.aclose()


async def warm_payloads(source: MemorySource, label: str, note: str) -> None:
    builder = SnapshotBuilder([source], default_policy=LONG)
    wanted = keys(1000)
    await builder.build(wanted)
    seconds = await best_of(50, lambda: builder.build(wanted))
    print(f"engine.warm_build 1000 keys, {label}: {seconds * 1e6 / 1000:.2f} us/key {note}")
    await builder.aclose()


async def warm_build_dicts() -> None:
    await warm_payloads(DictSource(), "nested dict payloads", "(one copy per key, no target)")


async def warm_build_quotes() -> None:
    await warm_payloads(QuoteSource(), "small dict payloads", "(one copy per key) target<=1.5")


class ListEvents:
    """An in-memory event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.events.append((event_type, payload))


async def observed_warm_build() -> None:
    wanted = keys(1000)
    null = SnapshotBuilder([MemorySource()], default_policy=LONG)
    observed = SnapshotBuilder(
        [MemorySource()], default_policy=LONG, metrics=InMemoryMetrics(), events=ListEvents()
    )
    for builder in (null, observed):
        await builder.build(wanted)
    plain = await best_of(50, lambda: null.build(wanted))
    with_sinks = await best_of(50, lambda: observed.build(wanted))
    print(
        f"engine.warm_build 1000 keys with in-memory metrics+events: {with_sinks / plain:.2f}x "
        f"null sinks ({with_sinks * 1e6 / 1000:.2f} vs {plain * 1e6 / 1000:.2f} us/key) "
        "target<=1.3x"
    )
    await null.aclose()
    await observed.aclose()


async def metrics_warm_build() -> None:
    wanted = keys(1000)
    null = SnapshotBuilder([MemorySource()], default_policy=LONG)
    observed = SnapshotBuilder([MemorySource()], default_policy=LONG, metrics=InMemoryMetrics())
    for builder in (null, observed):
        await builder.build(wanted)
    plain = await best_of(50, lambda: null.build(wanted))
    with_metrics = await best_of(50, lambda: observed.build(wanted))
    print(
        f"engine.warm_build 1000 keys with in-memory metrics: {with_metrics / plain:.2f}x "
        f"null sinks ({with_metrics * 1e6 / 1000:.2f} vs {plain * 1e6 / 1000:.2f} us/key) "
        "target<=1.1x"
    )
    await null.aclose()
    await observed.aclose()


async def cold_build(batch: bool) -> None:
    best = float("inf")
    for round_ in range(20):
        source = MemoryBatchSource() if batch else MemorySource()
        builder = SnapshotBuilder([source], default_policy=LONG)
        wanted = keys(200, prefix=f"r{round_}-")
        started = time.perf_counter()
        await builder.build(wanted)
        best = min(best, time.perf_counter() - started)
        await builder.aclose()
    kind = "batch" if batch else "single"
    print(f"engine.cold_build 200 keys ({kind} source): {best * 1e6 / 200:.2f} us/key target<=20")


async def cold_dicts(count: int, rounds: int) -> float:
    """The best cost per key (seconds) of a cold build of ``count`` small dict payloads."""
    best = float("inf")
    for round_ in range(rounds):
        builder = SnapshotBuilder([DictSource()], default_policy=LONG)
        wanted = keys(count, prefix=f"r{round_}-")
        started = time.perf_counter()
        await builder.build(wanted)
        best = min(best, time.perf_counter() - started)
        await builder.aclose()
    return best / count


async def cold_build_dicts() -> None:
    per_key = await cold_dicts(200, 20)
    print(f"engine.cold_build 200 keys, small dict payloads: {per_key * 1e6:.2f} us/key target<=8")


async def cold_build_scaling() -> None:
    small = await cold_dicts(100, 30)
    large = await cold_dicts(10_000, 3)
    print(
        f"engine.cold_build 10,000 vs 100 keys, small dict payloads: {large / small:.2f}x per key "
        f"({large * 1e6:.2f} vs {small * 1e6:.2f} us/key) target<=1.1x"
    )


async def slow_parallel_overhead() -> None:
    async def sleeper(key: ResourceKey) -> str:
        await asyncio.sleep(0.025)
        return key.subject

    wanted = keys(20)
    plain = engine = float("inf")
    for _ in range(7):  # alternate, so both see the same machine load
        started = time.perf_counter()
        await asyncio.gather(*(sleeper(key) for key in wanted))
        plain = min(plain, time.perf_counter() - started)
        builder = SnapshotBuilder([MemorySource(delay=0.025)], max_concurrency=20)
        started = time.perf_counter()
        await builder.build(wanted)
        engine = min(engine, time.perf_counter() - started)
        await builder.aclose()
    print(
        f"engine.parallel 20 keys x 25 ms overhead over asyncio.gather: "
        f"{(engine - plain) * 1e3:.2f} ms ({engine * 1e3:.1f} vs {plain * 1e3:.1f} ms) "
        "target<=0.5"
    )


async def stampede_timed() -> None:
    best, calls = float("inf"), set()
    for _ in range(5):
        source = MemorySource(delay=0.005)
        builder = SnapshotBuilder([source], default_policy=LONG)
        wanted = keys(10)
        started = time.perf_counter()
        await asyncio.gather(*(builder.build(wanted) for _ in range(500)))
        best = min(best, time.perf_counter() - started)
        calls.add(source.calls)
        await builder.aclose()
    print(
        f"engine.stampede 500 builds x 10 missing keys, 5 ms source: {best * 1e3:.1f} ms "
        f"target<=20, source calls {sorted(calls)} target=[10]"
    )


async def slow_parallel() -> None:
    best = float("inf")
    for _ in range(5):
        builder = SnapshotBuilder([MemorySource(delay=0.025)], max_concurrency=20)
        started = time.perf_counter()
        await builder.build(keys(20))
        best = min(best, time.perf_counter() - started)
        await builder.aclose()
    print(f"engine.parallel 20 keys x 25 ms, max_concurrency=20: {best * 1e3:.1f} ms target<=26")


async def stampede() -> None:
    source = MemorySource(delay=0.001)
    builder = SnapshotBuilder([source], default_policy=LONG)
    wanted = keys(10)
    await asyncio.gather(*(builder.build(wanted) for _ in range(500)))
    print(f"engine.stampede 500 builds x 10 missing keys: {source.calls} source calls target=10")
    await builder.aclose()


class SizedBatchSource(MemoryBatchSource):
    """A batch source of at most ``max_batch_size`` keys per call, recording each call's size."""

    def __init__(self, max_batch_size: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.max_batch_size = max_batch_size
        self.sizes: list[int] = []

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, Any]:
        self.sizes.append(len(keys))
        return await super().fetch_many(keys, context)


async def batch_5000() -> None:
    best = float("inf")
    for round_ in range(10):
        source = SizedBatchSource(max_batch_size=500)
        builder = SnapshotBuilder([source], default_policy=LONG)
        wanted = keys(5000, prefix=f"b{round_}-")
        started = time.perf_counter()
        await builder.build(wanted)
        best = min(best, time.perf_counter() - started)
        await builder.aclose()
    print(
        f"engine.batch 5000 keys, max_batch_size=500: {best * 1e3:.1f} ms "
        f"({len(source.sizes)} calls) target<=40"
    )


async def batch_window(window: float | None) -> None:
    best = float("inf")
    for round_ in range(20):
        source = SizedBatchSource()
        # Without a window, pass nothing: the same case runs on versions without the option.
        options: dict[str, Any] = {} if window is None else {"batch_window_seconds": window}
        builder = SnapshotBuilder([source], default_policy=LONG, **options)
        wanted = keys(50, prefix=f"w{round_}-")
        started = time.perf_counter()
        await asyncio.gather(*(builder.build([key]) for key in wanted))
        best = min(best, time.perf_counter() - started)
        await builder.aclose()
    target = "target<=2 ms, 1 call" if window is not None else "(no window)"
    print(
        f"engine.batch_window={window} 50 concurrent one-key builds: {best * 1e3:.2f} ms, "
        f"{len(source.sizes)} batch calls of {max(source.sizes)} keys at most {target}"
    )


async def batch_window_off() -> None:
    await batch_window(None)


async def batch_window_same_turn() -> None:
    await batch_window(0.0)


def raw_of(key: ResourceKey) -> ResourceKey:
    return ResourceKey("bench", "value", key.subject)


def doubled() -> CallableDerivedSource:
    """``derived/double/<subject>``: twice the raw value ``bench/value/<subject>``."""
    return CallableDerivedSource(
        name="doubled",
        priority=5,
        supports=lambda wanted: wanted.namespace == "derived",
        dependencies=lambda wanted: [raw_of(wanted)],
        deriver=lambda wanted, deps, context: 2 * deps.value(raw_of(wanted)),
    )


async def session_derived() -> None:
    builder = SnapshotBuilder([MemorySource(), doubled()], default_policy=LONG)
    wanted = [ResourceKey("derived", "double", f"k{i}") for i in range(1000)]
    await builder.build(wanted)  # warm: 1,000 raw and 1,000 derived values cached

    async def stage() -> None:
        await builder.session().resolve(wanted)

    seconds = await best_of(50, stage)
    print(
        f"engine.session_derived warm stage, 1000 derived keys over 1000 raw keys: "
        f"{seconds * 1e6 / 1000:.2f} us/key (no target)"
    )
    await builder.aclose()


async def support_table_full() -> None:
    """Cold builds of new keys once the supports() table (100,000 answers, the default) is full
    and has dropped 50,000: the cost per key stays what it was while the table filled."""
    builder = SnapshotBuilder(
        [MemoryBatchSource()], default_policy=LONG, cache=AsyncMemoryCache(max_entries=1000)
    )
    wanted = keys(180_000, prefix="t")

    async def per_key(start: int, count: int = 10_000) -> float:
        started = time.process_time()
        for at in range(start, start + count, 1000):
            await builder.build(wanted[at : at + 1000])
        return (time.process_time() - started) / count

    await per_key(0)  # warm-up
    filling = statistics.median([await per_key(at) for at in (10_000, 20_000, 30_000)])
    await per_key(40_000, 110_000)  # full at 100,000; 50,000 answers dropped since
    full = statistics.median([await per_key(at) for at in (150_000, 160_000, 170_000)])
    await builder.aclose()
    print(
        f"engine.support_table full (100,000 answers) vs filling: {full / filling:.2f}x CPU per "
        f"new key ({full * 1e6:.2f} vs {filling * 1e6:.2f} us/key) target<=1.5x"
    )


BENCHMARKS = (
    warm_build,
    warm_build_quotes,
    warm_build_dicts,
    metrics_warm_build,
    observed_warm_build,
    lambda: cold_build(batch=False),
    lambda: cold_build(batch=True),
    cold_build_dicts,
    cold_build_scaling,
    slow_parallel,
    slow_parallel_overhead,
    stampede,
    stampede_timed,
    batch_5000,
    batch_window_off,
    batch_window_same_turn,
    session_derived,
    support_table_full,
)


async def main(only: str | None) -> None:
    for bench in BENCHMARKS:
        name = getattr(bench, "__name__", "")
        if (
            only is None
            or (name != "<lambda>" and only in name)
            or (name == "<lambda>" and only in "cold_build")
        ):
            await bench()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="run the benchmarks whose name contains this")
    asyncio.run(main(parser.parse_args().only))
