"""Per-key single-flight (DESIGN step 3): one source call per key however many builds ask,
isolated results, joiners bound by their own deadline, cancellation in both directions, and
publications that are newer than the flight's result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import (
    Batch,
    Gate,
    Single,
    assert_quiet,
    keys,
    make_builder,
    payload,
    settle,
    timed_out,
)

from coalestra.core import (
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuildError,
)
from coalestra.testing import VirtualClock

A, B, C = keys("A", "B", "C")
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


async def test_a_hundred_builds_of_the_same_missing_keys_call_each_key_once(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, lambda k, _c: {"subject": k.subject, "items": [1, 2]}, delay=1.0)
    builder = make_builder([source], clock, max_concurrency=4)
    start = clock.monotonic()

    snapshots = await asyncio.gather(*(builder.build([A, B, C]) for _ in range(100)))

    assert sorted(source.calls) == sorted([A, B, C])
    assert clock.monotonic() - start == pytest.approx(1.0)
    assert sum(s.diagnostics.coalesced_requests for s in snapshots) == 99 * 3
    assert sum(s.diagnostics.source_calls for s in snapshots) == 3
    first = snapshots[0]
    for other in snapshots[1:]:
        for k in (A, B, C):
            assert other.value(k) == first.value(k)
            assert other[k].version == first[k].version
            assert other.value(k) is not first.value(k)
            assert other.value(k)["items"] is not first.value(k)["items"]
    await assert_quiet(builder)


async def test_joiners_cannot_modify_each_others_payloads(clock: VirtualClock) -> None:
    source = Single("rest", 1, lambda _k, _c: {"items": [1]}, delay=1.0)
    builder = make_builder([source], clock, default_policy=LONG)

    one, two = await asyncio.gather(builder.build([A]), builder.build([A]))
    one.value(A)["items"].append("mutated")
    three = await builder.build([A])

    assert two.value(A) == {"items": [1]}
    assert three.value(A) == {"items": [1]}
    assert len(source.calls) == 1


async def test_overlapping_builds_share_only_the_overlapping_keys(clock: VirtualClock) -> None:
    source = Batch("batch", 1, delay=1.0)
    builder = make_builder([source], clock)

    first, second = await asyncio.gather(builder.build([A, B]), builder.build([B, C]))

    assert source.calls == [(A, B), (C,)]
    assert first.value(B) == second.value(B)
    assert second.diagnostics.coalesced_requests == 1


async def test_a_keys_flight_resolves_when_its_priority_level_is_written(
    clock: VirtualClock,
) -> None:
    """B-CACHE-17: every fresh value of one priority level is written in one call, after the
    level; a key's flight resolves then (with what that write decided, B-CACHE-18)."""

    async def uneven(k: ResourceKey, _c: Any) -> str:
        await asyncio.sleep(1.0 if k == A else 10.0)
        return k.subject

    source = Single("rest", 1, uneven)
    builder = make_builder([source], clock, max_concurrency=4)
    start = clock.monotonic()

    owner = asyncio.create_task(builder.build([A, B]))
    await settle()
    await asyncio.sleep(0.5)
    joined = await builder.build([A])
    joined_at = clock.monotonic() - start
    await owner

    assert joined_at == pytest.approx(10.0)
    assert joined.value(A) == "A"
    assert joined.diagnostics.coalesced_requests == 1
    assert source.calls == [A, B]
    assert clock.monotonic() - start == pytest.approx(10.0)


async def test_a_joiner_with_a_shorter_deadline_times_out_while_the_owner_completes(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=5.0)
    builder = make_builder([source], clock)
    start = clock.monotonic()

    owner = asyncio.create_task(builder.build([A]))
    await settle()
    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([A], deadline_seconds=1.0)
    joiner_done = clock.monotonic() - start
    snapshot = await owner

    assert timed_out(caught.value.errors[A])
    assert joiner_done == pytest.approx(1.0)
    assert snapshot.value(A) == {"source": "rest", "subject": "A"}
    assert clock.monotonic() - start == pytest.approx(5.0)
    assert source.calls == [A]
    assert source.cancelled == 0
    assert (await builder.health_snapshot()).deadline_exceeded_count == 1


async def test_a_joiner_with_a_longer_deadline_outlives_the_owners_deadline(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=5.0)
    builder = make_builder([source], clock)
    start = clock.monotonic()

    owner = asyncio.create_task(builder.build([A], deadline_seconds=1.0, strict=False))
    await settle()
    joined = await builder.build([A], deadline_seconds=30.0, strict=False)
    abandoned = await owner

    assert timed_out(abandoned.errors[A])
    assert joined.errors == {}
    assert joined.value(A) == {"source": "rest", "subject": "A"}
    assert clock.monotonic() - start == pytest.approx(5.0)
    assert source.calls == [A]


async def test_a_build_right_after_a_deadline_does_not_inherit_the_abandoned_flight(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=10.0)
    builder = make_builder([source], clock)

    first = await builder.build([A], deadline_seconds=1.0, strict=False)
    second = await builder.build([A], deadline_seconds=1.0, strict=False)

    assert timed_out(first.errors[A])
    assert timed_out(second.errors[A]), repr(second.errors[A])
    assert len(source.calls) == 2


async def test_cancelling_the_owner_does_not_strand_a_joiner(clock: VirtualClock) -> None:
    gate = Gate()

    async def parked(k: ResourceKey, _c: Any) -> str:
        await gate.wait()
        return f"value-{k.subject}"

    source = Single("rest", 1, parked)
    builder = make_builder([source], clock)

    owner = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    joiner = asyncio.create_task(builder.build([A]))
    await settle()
    owner.cancel()
    await settle()
    gate.open()

    snapshot = await joiner
    assert snapshot.value(A) == "value-A"
    assert owner.cancelled()
    assert source.calls == [A]
    assert source.cancelled == 0
    await assert_quiet(builder)


async def test_cancelling_a_joiner_does_not_cancel_the_flight(clock: VirtualClock) -> None:
    gate = Gate()

    async def parked(_k: ResourceKey, _c: Any) -> str:
        await gate.wait()
        return "value"

    source = Single("rest", 1, parked)
    builder = make_builder([source], clock)

    owner = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    joiner = asyncio.create_task(builder.build([A]))
    await settle()
    joiner.cancel()
    await settle()
    gate.open()

    assert (await owner).value(A) == "value"
    assert joiner.cancelled()
    assert source.cancelled == 0


async def test_when_every_caller_is_gone_the_flight_is_cancelled(clock: VirtualClock) -> None:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock)
    tasks = [asyncio.create_task(builder.build([A])) for _ in range(3)]
    await gate.arrived.wait()
    assert (await builder.health_snapshot()).singleflight_in_flight == 1

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await settle()

    assert source.cancelled == 1
    await assert_quiet(builder)
    # the key is not stuck: a new build calls the source again
    gate.open()
    source.handler = lambda _k, _c: "again"
    assert (await builder.build([A])).value(A) == "again"


async def test_a_failure_is_shared_with_joiners_without_calling_again(
    clock: VirtualClock,
) -> None:
    def down(_k: ResourceKey, _c: Any) -> Any:
        raise RuntimeError("down")

    source = Single("rest", 1, down, delay=1.0)
    builder = make_builder([source], clock)

    results = await asyncio.gather(*(builder.build([A], strict=False) for _ in range(5)))

    assert source.calls == [A]
    for snapshot in results:
        assert isinstance(snapshot.errors[A], ResourceResolutionError)


async def test_a_newer_publication_during_the_flight_is_what_the_next_build_reads(
    clock: VirtualClock,
) -> None:
    gate = Gate()
    start = clock.now()

    async def old_news(_k: ResourceKey, _c: Any) -> Any:
        await gate.wait()
        return payload("from-source", observed_at=start)

    source = Single("rest", 1, old_news)
    builder = make_builder([source], clock, default_policy=LONG)

    owner = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    joiner = asyncio.create_task(builder.build([A]))
    await asyncio.sleep(2.0)
    await builder.publisher.publish(A, "published", source="stream", observed_at=clock.now())
    gate.open()

    # B-CACHE-18: the fetch is served (and pinned) as fetched; the cache keeps the newer one
    for snapshot in await asyncio.gather(owner, joiner):
        assert snapshot.value(A) == "from-source"
        assert snapshot[A].observed_at == start
    cached = await builder.build([A])
    assert cached.value(A) == "published"
    assert cached[A].from_cache


async def test_an_older_publication_during_the_flight_loses_to_its_result(
    clock: VirtualClock,
) -> None:
    gate = Gate()
    start = clock.now()

    async def fresh(_k: ResourceKey, _c: Any) -> Any:
        await gate.wait()
        return "from-source"

    builder = make_builder([Single("rest", 1, fresh)], clock, default_policy=LONG)
    owner = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    await asyncio.sleep(2.0)
    await builder.publisher.publish(A, "published", source="stream", observed_at=start)
    gate.open()

    snapshot = await owner

    assert snapshot.value(A) == "from-source"
    assert (await builder.build([A])).value(A) == "from-source"


async def test_in_flight_count_is_visible_then_cleared(clock: VirtualClock) -> None:
    gate = Gate()
    builder = make_builder([Single("rest", 1, lambda _k, _c: gate.wait())], clock)

    task = asyncio.create_task(builder.build([A, B, C]))
    await gate.arrived.wait()
    assert (await builder.health_snapshot()).singleflight_in_flight == 3
    gate.open()
    await task

    await assert_quiet(builder)
