"""A build loop that passes the same key objects again reports exactly what a build of equal,
new key objects reports: the request's keys are remembered by identity and order only."""

from __future__ import annotations

from typing import Any

import pytest

from coalestra import CallableSource, FetchContext, FreshnessPolicy, ResourceKey, SnapshotBuilder
from coalestra.observability import NullMetrics
from coalestra.observability._instrumentation import Instrumentation
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(60.0, 60.0)


def _keys() -> list[ResourceKey]:
    """Two resource types, interleaved, so the order of per-type metrics shows."""
    return [
        ResourceKey("market", "price", f"S{i}") if i % 2 else ResourceKey("ref", "asset", f"S{i}")
        for i in range(6)
    ]


class Recorder:
    """Both sink protocols: every call in one list, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.calls.append(("increment", metric, value, labels))

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.calls.append(("observe", metric, value, labels))

    def emit(self, event_type: str, **payload: Any) -> None:
        payload.pop("snapshot_id", None)  # new each build
        self.calls.append(("emit", event_type, payload))

    def take(self) -> list[tuple[Any, ...]]:
        taken, self.calls = self.calls, []
        return taken


def _builder(sink: Recorder, clock: VirtualClock) -> SnapshotBuilder:
    async def fetch(key: ResourceKey, context: FetchContext) -> str:
        return key.subject

    source = CallableSource(name="rest", priority=1, supports=lambda key: True, fetcher=fetch)
    return SnapshotBuilder([source], clock=clock, default_policy=POLICY, metrics=sink, events=sink)


def _hits(calls: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    return [
        (call[2]["resource"], call[2]["freshness"])
        for call in calls
        if call[0] == "emit" and call[1] == "cache_hit"
    ]


async def test_same_key_objects_report_what_equal_new_keys_report(clock: VirtualClock) -> None:
    sink = Recorder()
    keys = _keys()
    async with _builder(sink, clock) as builder:
        await builder.build(keys)
        sink.take()
        first = (await builder.build(keys), sink.take())
        again = (await builder.build(keys), sink.take())  # the same list, the same objects
        as_tuple = (await builder.build(tuple(keys)), sink.take())
        equal = (await builder.build(_keys()), sink.take())  # equal keys, new objects
    for snapshot, calls in (again, as_tuple, equal):
        assert list(snapshot) == list(first[0]) == keys
        assert calls == first[1]
    fresh = [call for call in first[1] if call[1] == "cache_access_total"]
    assert fresh == [
        ("increment", "cache_access_total", 3, {"status": "fresh", **labels})
        for labels in (
            {"resource_namespace": "ref", "resource_name": "asset"},
            {"resource_namespace": "market", "resource_name": "price"},
        )
    ]
    assert _hits(first[1]) == [(str(key), "fresh") for key in keys]


async def test_reordered_or_changed_keys_are_not_taken_for_the_last_ones(
    clock: VirtualClock,
) -> None:
    sink = Recorder()
    keys = _keys()
    async with _builder(sink, clock) as builder:
        await builder.build(keys)
        await builder.build(keys)
        sink.take()
        keys.reverse()  # the same list object and key objects, in another order
        snapshot = await builder.build(keys)
        assert list(snapshot) == keys
        assert _hits(sink.take()) == [(str(key), "fresh") for key in keys]
        keys[0] = ResourceKey("other", "thing", "new")  # the same list, one key changed
        snapshot = await builder.build(keys)
        assert list(snapshot) == keys
        calls = sink.take()
        assert (
            "increment",
            "cache_access_total",
            1,
            {"status": "miss", "resource_namespace": "other", "resource_name": "thing"},
        ) in calls
        assert _hits(calls) == [(str(key), "fresh") for key in keys[1:]]


async def test_repeated_keys_are_dropped_on_every_build(clock: VirtualClock) -> None:
    sink = Recorder()
    a, b = _keys()[:2]
    async with _builder(sink, clock) as builder:
        for _ in range(3):
            snapshot = await builder.build([a, a, b, a])
            assert list(snapshot) == [a, b]
            assert snapshot.diagnostics.requested_resources == 2
        with pytest.raises(TypeError, match="keys must contain only ResourceKey, got str"):
            await builder.build([a, a, b, "market:price:S0"])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="keys must contain only ResourceKey, got str"):
            await builder.build([a, "market:price:S0", b, a])  # type: ignore[list-item]


def test_cache_hits_name_keys_never_rendered_before() -> None:
    sink = Recorder()
    keys = [ResourceKey("market", "price", f"new{i}", {"venue": "v"}) for i in range(3)]
    Instrumentation(NullMetrics(), sink).cache_hits(keys)
    texts = [f"market:price:new{i}?venue=v" for i in range(3)]
    assert sink.take() == [
        ("emit", "cache_hit", {"resource": text, "freshness": "fresh"}) for text in texts
    ]
    Instrumentation(NullMetrics(), sink).cache_hits(keys)  # now rendered: the same events
    assert _hits(sink.take()) == [(text, "fresh") for text in texts]


def test_cache_hits_mark_stale_while_revalidate_keys() -> None:
    sink = Recorder()
    keys = _keys()
    Instrumentation(NullMetrics(), sink).cache_hits(keys, keys[1::2])
    assert _hits(sink.take()) == [
        (str(key), "stale_while_revalidate" if i % 2 else "fresh") for i, key in enumerate(keys)
    ]


@pytest.mark.parametrize("swr", [False, True])
def test_a_raising_event_sink_is_counted_per_hit_and_the_others_still_go_out(swr: bool) -> None:
    class FailsEveryOther(Recorder):
        def emit(self, event_type: str, **payload: Any) -> None:
            super().emit(event_type, **payload)
            if len(self.calls) % 2:
                raise RuntimeError("sink down")

    sink = FailsEveryOther()
    keys = _keys()
    report = Instrumentation(NullMetrics(), sink)
    report.cache_hits(keys, keys[:1] if swr else ())
    assert [resource for resource, _ in _hits(sink.calls)] == [str(key) for key in keys]
    assert report.sink_failures == 3
