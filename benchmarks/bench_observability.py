"""Observability overhead: buffered sinks per record, Instrumentation per warm build.

Prints one ``name: value unit (note)`` line per figure. Figures are the best of several rounds,
so a busy machine inflates them less.

* ``*_producer``: what ``emit``/``increment`` costs the caller (the event loop) while the worker
  is held inside the downstream, so only the enqueue is measured.
* ``*_end_to_end``: records enqueued and delivered by a live worker to a null downstream, per
  record, until ``flush`` returns; the worker's CPU time shares the GIL with the producer.
* ``warm_build_*``: a simulated warm build of 1,000 keys (dedupe, one cache lookup and freshness
  test per key, result mapping) with the facts a real build reports, once with the null sinks
  (``Instrumentation.enabled`` is False, so nothing is gathered) and once with ``InMemoryMetrics``
  plus an in-memory event recorder. The simulated build is the bare minimum of a warm build, so
  the ratio is an upper bound of what a real build pays.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from coalestra.core import ResourceKey, Snapshot
from coalestra.observability import (
    BufferedEventSink,
    BufferedMetricsSink,
    InMemoryMetrics,
    NullEventSink,
    NullMetrics,
)
from coalestra.observability._instrumentation import Instrumentation

_SNAPSHOT = Snapshot("snap", 0.0, {})
RECORDS = 50_000
ROUNDS = 5
BUILD_KEYS = 1_000
BUILDS = 200


def _best(run: Callable[[], float]) -> float:
    return min(run() for _ in range(ROUNDS))


class _Held:
    """A downstream that holds the worker inside its first call until released."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def emit(self, event_type: str, **payload: Any) -> None:
        self.gate.wait()

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.gate.wait()

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.gate.wait()


class _EventList:
    """Keeps the latest events, as an in-process event consumer would (bounded memory)."""

    def __init__(self) -> None:
        self.events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=1_000)

    def emit(self, event_type: str, **payload: Any) -> None:
        self.events.append((event_type, payload))


def _per_record(call: Callable[[], None], finish: Callable[[], None] | None = None) -> float:
    start = time.perf_counter()
    for _ in range(RECORDS):
        call()
    if finish is not None:
        finish()
    return (time.perf_counter() - start) / RECORDS * 1e6


def _null_emit() -> float:
    sink = NullEventSink()
    return _per_record(lambda: sink.emit("source_call", source="rest", outcome="success"))


def _buffered_emit_producer() -> float:
    held = _Held()
    sink = BufferedEventSink(held, max_pending=RECORDS + 1)
    try:
        return _per_record(lambda: sink.emit("source_call", source="rest", outcome="success"))
    finally:
        held.gate.set()
        sink.close(drain=False)


def _buffered_emit_end_to_end() -> float:
    sink = BufferedEventSink(NullEventSink(), max_pending=RECORDS + 1)
    try:
        return _per_record(
            lambda: sink.emit("source_call", source="rest", outcome="success"), sink.flush
        )
    finally:
        sink.close()


def _null_increment() -> float:
    sink = NullMetrics()
    return _per_record(lambda: sink.increment("coalestra_retries_total", 1, source="rest"))


def _buffered_increment_producer() -> float:
    held = _Held()
    sink = BufferedMetricsSink(held, max_pending=RECORDS + 1)
    try:
        return _per_record(lambda: sink.increment("coalestra_retries_total", 1, source="rest"))
    finally:
        held.gate.set()
        sink.close(drain=False)


def _buffered_increment_end_to_end() -> float:
    sink = BufferedMetricsSink(NullMetrics(), max_pending=RECORDS + 1)
    try:
        return _per_record(
            lambda: sink.increment("coalestra_retries_total", 1, source="rest"), sink.flush
        )
    finally:
        sink.close()


def _keys() -> list[ResourceKey]:
    names = ("price", "book", "trade", "funding")
    return [
        ResourceKey("market", names[i % len(names)], f"SYM{i}", {"venue": "spot"})
        for i in range(BUILD_KEYS)
    ]


def _warm_build(
    keys: Sequence[ResourceKey],
    cache: dict[ResourceKey, tuple[object, float]],
    helper: Instrumentation,
) -> dict[ResourceKey, object]:
    """The minimum a warm build does per key, plus what it reports."""
    now = 100.0
    values: dict[ResourceKey, object] = {}
    for key in dict.fromkeys(keys):
        value, expires_at = cache[key]
        if expires_at > now:
            values[key] = value
    if helper.metrics_on:  # the one O(keys) step of metrics, skipped when nobody listens
        # Every key hit: the fresh hits per type are the request's counts.
        helper.cache_accesses("fresh", helper.count_by_type(keys))
    if helper.events_on:  # one cache_hit event per key (the published event vocabulary)
        helper.cache_hits((key, "fresh") for key in values)
    if helper.enabled:
        helper.build_finished(_SNAPSHOT, build_failed=False, strict=True, resources=len(keys))
    return values


def _per_build(
    null_helper: Instrumentation, memory_helper: Instrumentation, *, same_tuple: bool
) -> tuple[float, float]:
    """Per-build µs with each helper; rounds alternate so machine noise hits both alike.

    ``same_tuple``: the application passes one request tuple every build (the common loop);
    otherwise a fresh list each build, so the per-type counts are recomputed.
    """
    keys = tuple(_keys())
    cache = {key: (index, 1_000.0) for index, key in enumerate(keys)}

    def run(helper: Instrumentation) -> float:
        start = time.perf_counter()
        for _ in range(BUILDS):
            _warm_build(keys if same_tuple else list(keys), cache, helper)
        return (time.perf_counter() - start) / BUILDS * 1e6

    null_times, memory_times = [], []
    for _ in range(ROUNDS * 2):
        null_times.append(run(null_helper))
        memory_times.append(run(memory_helper))
    return min(null_times), min(memory_times)


def _instrumentation_only(helper: Instrumentation) -> float:
    counts = helper.count_by_type(_keys())

    def run() -> float:
        start = time.perf_counter()
        for _ in range(BUILDS):
            helper.cache_accesses("fresh", counts)
            helper.build_finished(_SNAPSHOT, build_failed=False, strict=True, resources=BUILD_KEYS)
        return (time.perf_counter() - start) / BUILDS * 1e6

    return _best(run)


def main() -> None:
    null_emit = _best(_null_emit)
    print(f"null_event_sink_emit: {null_emit:.3f} us/record")
    producer = _best(_buffered_emit_producer)
    print(f"buffered_event_sink_emit_producer: {producer:.3f} us/record")
    end_to_end = _best(_buffered_emit_end_to_end)
    print(f"buffered_event_sink_emit_end_to_end: {end_to_end:.3f} us/record")
    null_inc = _best(_null_increment)
    print(f"null_metrics_increment: {null_inc:.3f} us/record")
    producer = _best(_buffered_increment_producer)
    print(f"buffered_metrics_sink_increment_producer: {producer:.3f} us/record")
    end_to_end = _best(_buffered_increment_end_to_end)
    print(f"buffered_metrics_sink_increment_end_to_end: {end_to_end:.3f} us/record")

    null_helper = Instrumentation(NullMetrics(), NullEventSink())
    metrics_helper = Instrumentation(InMemoryMetrics(), NullEventSink())
    null_build, metrics_build = _per_build(null_helper, metrics_helper, same_tuple=False)
    print(
        f"warm_build_1000_keys_metrics_only: {metrics_build:.1f} us/build "
        f"({metrics_build / null_build:.2f}x null sinks)"
    )
    memory_helper = Instrumentation(InMemoryMetrics(), _EventList())
    for same_tuple, label in ((True, "same_request_tuple"), (False, "fresh_key_list")):
        null_build, memory_build = _per_build(null_helper, memory_helper, same_tuple=same_tuple)
        overhead = memory_build - null_build
        print(f"warm_build_1000_keys_{label}_null_sinks: {null_build:.1f} us/build")
        print(f"warm_build_1000_keys_{label}_in_memory_sinks: {memory_build:.1f} us/build")
        print(
            f"warm_build_{label}_instrumentation_overhead: {overhead:.1f} us/build "
            f"({overhead / BUILD_KEYS:.3f} us/key)"
        )
        print(
            f"warm_build_{label}_in_memory_vs_null: {memory_build / null_build:.2f}x "
            "(bare simulated loop, an upper bound; target <= 1.3x on the engine's warm build)"
        )
    only = _instrumentation_only(Instrumentation(InMemoryMetrics(), _EventList()))
    print(f"instrumentation_calls_per_build_in_memory: {only:.1f} us/build (counts given)")


if __name__ == "__main__":
    main()
