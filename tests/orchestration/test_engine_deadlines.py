"""Absolute deadlines at every wait point (DESIGN steps 1, 3 and 5): queued for capacity, in a
slow source call, in retry backoff, joined to someone else's flight, and waiting for derived
dependencies. Each ends at the right virtual time with the right error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import (
    Batch,
    Derived,
    Gate,
    Single,
    assert_quiet,
    key,
    keys,
    make_builder,
    settle,
    timed_out,
)

from coalestra.core import (
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuildError,
    SourceFailure,
)
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A, B = keys("A", "B")


def down(_k: ResourceKey, _c: Any) -> Any:
    raise RuntimeError("down")


async def test_deadline_while_queued_for_capacity(clock: VirtualClock) -> None:
    gate = Gate()
    holder = Single("holder", 1, lambda _k, _c: gate.wait(), supports=lambda k: k == A)
    other = Single("other", 1, supports=lambda k: k == B)
    builder = make_builder([holder, other], clock, max_concurrency=1)
    start = clock.monotonic()

    held = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([B], deadline_seconds=1.5)

    assert clock.monotonic() - start == pytest.approx(1.5)
    assert timed_out(caught.value.errors[B])
    assert other.calls == []
    await settle()
    capacity = await builder.capacity_snapshot()
    assert (capacity["__global__"].in_use, capacity["__global__"].waiting) == (1, 0)
    assert (await builder.health_snapshot()).deadline_exceeded_count >= 1
    gate.open()
    await held
    await assert_quiet(builder)


async def test_a_deadline_shorter_than_the_queue_timeout_is_a_deadline_error(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=10.0, max_concurrency=1, queue_timeout_seconds=5.0)
    builder = make_builder([source], clock)

    held = asyncio.create_task(builder.build([A]))
    await settle()
    snapshot = await builder.build([B], deadline_seconds=1.0, strict=False)
    await held

    assert timed_out(snapshot.errors[B])
    assert (await builder.health_snapshot()).queue_timeout_count == 0


async def test_deadline_during_a_slow_source_call(clock: VirtualClock) -> None:
    source = Single("slow", 1, delay=10.0)
    builder = make_builder([source], clock)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=2.0, strict=False)

    assert clock.monotonic() - start == pytest.approx(2.0)
    error = snapshot.errors[A]
    assert timed_out(error)
    await settle()
    assert source.cancelled == 1
    await assert_quiet(builder)


async def test_deadline_during_a_slow_batch_call(clock: VirtualClock) -> None:
    batch = Batch("batch", 1, delay=10.0)
    builder = make_builder([batch], clock)
    start = clock.monotonic()

    snapshot = await builder.build([A, B], deadline_seconds=2.0, strict=False)

    assert clock.monotonic() - start == pytest.approx(2.0)
    assert all(timed_out(snapshot.errors[k]) for k in (A, B))


async def test_a_source_timeout_is_a_source_timeout_error_and_falls_through(
    clock: VirtualClock,
) -> None:
    slow = Single("slow", 5, delay=10.0, timeout_seconds=1.0)
    fallback = Single("fallback", 1, lambda _k, _c: "fallback")
    builder = make_builder([slow, fallback], clock)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=30.0)

    assert snapshot.value(A) == "fallback"
    assert clock.monotonic() - start == pytest.approx(1.0)
    assert slow.cancelled == 1
    assert (await builder.health_snapshot()).source_timeout_count == 1


async def test_a_source_timeout_is_recorded_as_such(clock: VirtualClock) -> None:
    builder = make_builder([Single("slow", 5, delay=10.0, timeout_seconds=1.0)], clock)

    snapshot = await builder.build([A], deadline_seconds=30.0, strict=False)

    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [("slow", "SourceTimeoutError")]
    assert not timed_out(error)


async def test_the_build_deadline_binds_when_it_is_shorter_than_the_source_timeout(
    clock: VirtualClock,
) -> None:
    builder = make_builder([Single("slow", 5, delay=10.0, timeout_seconds=5.0)], clock)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=2.0, strict=False)

    assert clock.monotonic() - start == pytest.approx(2.0)
    assert timed_out(snapshot.errors[A])
    health = await builder.health_snapshot()
    assert health.source_timeout_count == 0


async def test_a_timed_out_source_is_retried_within_the_deadline(clock: VirtualClock) -> None:
    retry = RetryPolicy(max_attempts=3, base_delay_seconds=0.5, jitter_ratio=0.0)
    slow = Single("slow", 5, delay=10.0, timeout_seconds=1.0)
    builder = make_builder([slow], clock, retry_policy=retry)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=30.0, strict=False)

    # 1 s, back off 0.5 s, 1 s, back off 1 s, 1 s
    assert clock.monotonic() - start == pytest.approx(4.5)
    assert len(slow.calls) == 3
    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures == (
        SourceFailure("slow", "SourceTimeoutError", error.failures[0].message, 3),
    )


async def test_a_retry_whose_backoff_outlasts_the_deadline_is_not_started(
    clock: VirtualClock,
) -> None:
    retry = RetryPolicy(
        max_attempts=5, base_delay_seconds=5.0, max_delay_seconds=5.0, jitter_ratio=0
    )
    source = Single("flaky", 1, down)
    builder = make_builder([source], clock, retry_policy=retry)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=3.0, strict=False)

    assert source.calls == [A]
    assert clock.monotonic() - start == 0.0  # no point sleeping until the deadline
    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures == (SourceFailure("flaky", "RuntimeError", "down", 1),)
    assert snapshot.diagnostics.retries == 0


async def test_retries_stop_when_the_next_backoff_would_pass_the_deadline(
    clock: VirtualClock,
) -> None:
    retry = RetryPolicy(
        max_attempts=10, base_delay_seconds=1.0, max_delay_seconds=8.0, jitter_ratio=0
    )

    def unreachable(_k: ResourceKey, _c: Any) -> Any:
        raise ConnectionError("down")  # retryable, unlike a RuntimeError

    source = Single("flaky", 1, unreachable, delay=0.5)
    builder = make_builder([source], clock, retry_policy=retry)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=5.0, strict=False)

    # call 0-0.5, wait 1, call 1.5-2.0, wait 2, call 4.0-4.5; the next wait (4 s) cannot fit
    assert len(source.calls) == 3
    assert clock.monotonic() - start == pytest.approx(4.5)
    assert snapshot.diagnostics.retries == 2
    assert isinstance(snapshot.errors[A], ResourceResolutionError)


async def test_deadline_cuts_a_retry_that_started_in_time(clock: VirtualClock) -> None:
    attempts: list[float] = []

    async def slower_each_time(_k: ResourceKey, _c: Any) -> Any:
        attempts.append(clock.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails fast")
        await asyncio.sleep(100.0)

    retry = RetryPolicy(max_attempts=3, base_delay_seconds=1.0, jitter_ratio=0)
    builder = make_builder([Single("flaky", 1, slower_each_time)], clock, retry_policy=retry)
    start = clock.monotonic()

    snapshot = await builder.build([A], deadline_seconds=3.0, strict=False)

    assert [t - start for t in attempts] == pytest.approx([0.0, 1.0])
    assert clock.monotonic() - start == pytest.approx(3.0)
    assert timed_out(snapshot.errors[A])


async def test_deadline_while_joined_to_another_builds_flight(clock: VirtualClock) -> None:
    source = Single("slow", 1, delay=8.0)
    builder = make_builder([source], clock)
    start = clock.monotonic()

    owner = asyncio.create_task(builder.build([A], deadline_seconds=20.0))
    await settle()
    joined = await builder.build([A], deadline_seconds=3.0, strict=False)
    joined_at = clock.monotonic() - start

    assert joined_at == pytest.approx(3.0)
    assert timed_out(joined.errors[A])
    assert joined.diagnostics.coalesced_requests == 1
    assert (await owner).value(A)["subject"] == "A"
    assert source.calls == [A]


async def test_deadline_while_a_derived_key_waits_for_dependencies(clock: VirtualClock) -> None:
    raw = Single("raw", 1, delay=60.0, supports=lambda k: k.name == "raw")
    derived = Derived(
        "derived", 10, lambda k: (key(k.subject, "raw"),), supports=lambda k: k.name == "d"
    )
    builder = make_builder([derived, raw], clock)
    start = clock.monotonic()

    snapshot = await builder.build([key("x", "d")], deadline_seconds=4.0, strict=False)

    assert clock.monotonic() - start == pytest.approx(4.0)
    assert timed_out(snapshot.errors[key("x", "d")])
    assert derived.calls == []
    await builder.aclose()
    await assert_quiet(builder)


async def test_a_deadline_already_spent_on_a_higher_source_leaves_nothing_for_lower_ones(
    clock: VirtualClock,
) -> None:
    slow = Single("slow", 5, delay=10.0)
    fallback = Single("fallback", 1)
    builder = make_builder([slow, fallback], clock)

    snapshot = await builder.build([A], deadline_seconds=2.0, strict=False)

    assert timed_out(snapshot.errors[A])
    assert fallback.calls == []


async def test_the_deadline_is_absolute_for_the_whole_build(clock: VirtualClock) -> None:
    source = Single("rest", 1, delay=1.5)
    builder = make_builder([source], clock, max_concurrency=1)
    start = clock.monotonic()

    snapshot = await builder.build([A, B], deadline_seconds=2.0, strict=False)

    # A takes 1.5 s; B then gets only the 0.5 s left, not a fresh budget
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert snapshot.value(A)["subject"] == "A"
    assert timed_out(snapshot.errors[B])
    assert source.calls == [A, B]


async def test_no_deadline_means_no_time_limit(clock: VirtualClock) -> None:
    builder = make_builder([Single("slow", 1, delay=3600.0)], clock)

    snapshot = await builder.build([A])

    assert snapshot.value(A)["subject"] == "A"
    assert snapshot.diagnostics.duration_ms == pytest.approx(3_600_000.0)
