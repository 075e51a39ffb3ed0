"""Batching across concurrent builds (opt-in ``batch_window_seconds``): keys that concurrent
builds send to the same batch source share its calls, while each build keeps its own deadline,
cancellation and per-key errors, and calls keep their capacity, retries and circuits."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.orchestration.conftest import (
    Batch,
    Gate,
    Single,
    assert_quiet,
    key,
    keys,
    make_builder,
    payload,
    settle,
)

from coalestra.adapters import CallableBatchSource
from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotBuildError,
    SourceUnavailableError,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitState,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.sync import SyncSnapshotBuilder
from coalestra.testing import VirtualClock, VirtualTimeRunner

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
SUBJECTS = [f"s{i}" for i in range(50)]


def failure_types(error: Exception) -> list[tuple[str, str]]:
    assert isinstance(error, ResourceResolutionError)
    return [(failure.source, failure.error_type) for failure in error.failures]


def counting_source(calls: list[int], **options: Any) -> CallableBatchSource:
    """A CallableBatchSource serving every key its subject, recording each call's size."""

    def fetcher(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        calls.append(len(ks))
        return {k: k.subject for k in ks}

    return CallableBatchSource(
        name="batch", priority=0, supports=lambda _key: True, fetcher=fetcher, **options
    )


async def build_each(
    builder: SnapshotBuilder, wanted: list[ResourceKey], **options: Any
) -> list[Snapshot]:
    """One concurrent build per key."""
    return list(await asyncio.gather(*(builder.build([k], **options) for k in wanted)))


# -- sharing -------------------------------------------------------------------------------


async def test_fifty_concurrent_builds_make_one_batch_call(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    wanted = keys(*SUBJECTS)
    snapshots = await build_each(builder, wanted)
    assert [len(call) for call in batch.calls] == [50]
    assert set(batch.calls[0]) == set(wanted)
    for wanted_key, snapshot in zip(wanted, snapshots, strict=True):
        assert snapshot.value(wanted_key) == {"source": "batch", "subject": wanted_key.subject}
        # Each build took part in one call, and says so.
        assert (snapshot.diagnostics.source_calls, snapshot.diagnostics.batch_calls) == (1, 1)
        assert snapshot.diagnostics.source_calls_by_source == {"batch": 1}
    await assert_quiet(builder)
    await builder.aclose()


async def test_without_a_window_each_build_makes_its_own_call(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG)
    assert builder.batch_window_seconds is None
    await build_each(builder, keys(*SUBJECTS[:10]))
    assert [len(call) for call in batch.calls] == [1] * 10
    await builder.aclose()


async def test_the_sources_own_window_overrides_the_builders(clock: VirtualClock) -> None:
    calls: list[int] = []
    shared = counting_source(calls, batch_window_seconds=0.0)
    builder = make_builder([shared], clock, default_policy=LONG)  # the builder's: off
    await build_each(builder, keys(*SUBJECTS[:10]))
    assert calls == [10]
    await builder.aclose()


async def test_only_builds_with_equal_metadata_share_a_call(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    tenants = ["a", "b", "a", "b", "a"]
    await asyncio.gather(
        *(
            builder.build([key(f"{tenant}{i}")], metadata={"tenant": tenant})
            for i, tenant in enumerate(tenants)
        )
    )
    # A source reading context.metadata never serves one tenant's keys under another's.
    seen = {
        context.metadata["tenant"]: sorted(k.subject for k in call)
        for call, context in zip(batch.calls, batch.contexts, strict=True)
    }
    assert seen == {"a": ["a0", "a2", "a4"], "b": ["b1", "b3"]}
    await builder.aclose()


async def test_session_stages_and_builds_share_calls(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    async with builder.session() as session:
        staged, built = await asyncio.gather(session.resolve([key("a")]), builder.build([key("b")]))
    assert [sorted(k.subject for k in call) for call in batch.calls] == [["a", "b"]]
    assert staged.value(key("a"))["subject"] == "a"
    assert built.value(key("b"))["subject"] == "b"
    await builder.aclose()


async def test_calls_respect_max_batch_size(clock: VirtualClock) -> None:
    batch = Batch("batch", max_batch_size=20)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    snapshots = await build_each(builder, keys(*SUBJECTS))
    assert [len(call) for call in batch.calls] == [20, 20, 10]
    assert all(len(snapshot) == 1 for snapshot in snapshots)
    await builder.aclose()


async def test_a_builds_chunks_are_never_split_between_calls(clock: VirtualClock) -> None:
    batch = Batch("batch", max_batch_size=4)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    big = keys("a", "b", "c", "d", "e", "f")  # chunks of 4 and 2
    results = await asyncio.gather(builder.build(big), builder.build([key("x")]))
    assert sorted(len(call) for call in batch.calls) == [3, 4]  # (a b c d), (e f x)
    assert [len(snapshot) for snapshot in results] == [6, 1]
    await builder.aclose()


async def test_a_key_two_builds_want_is_fetched_once(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    first, second = await asyncio.gather(
        builder.build(keys("a", "b")), builder.build(keys("b", "c"))
    )
    assert len(batch.calls) == 1
    assert sorted(k.subject for k in batch.calls[0]) == ["a", "b", "c"]
    # Single-flight as ever: the second build joined the first's flight for b.
    assert second[key("b")].metadata.get("coalesced_request") is True
    assert "coalesced_request" not in first[key("b")].metadata
    await builder.aclose()


async def test_a_wider_window_gathers_builds_that_arrive_later(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.1)
    started = clock.monotonic()

    async def later(delay: float, subject: str) -> Snapshot:
        await asyncio.sleep(delay)
        return await builder.build([key(subject)])

    await asyncio.gather(later(0.0, "a"), later(0.05, "b"), later(0.2, "c"))
    assert [sorted(k.subject for k in call) for call in batch.calls] == [["a", "b"], ["c"]]
    assert clock.monotonic() - started == pytest.approx(0.3)  # c waited its own window
    await builder.aclose()


async def test_the_window_never_takes_more_than_half_a_builds_remaining_time(
    clock: VirtualClock,
) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=5.0)
    started = clock.monotonic()
    snapshot = await builder.build([key("a")], deadline_seconds=1.0)
    assert snapshot.value(key("a"))["subject"] == "a"
    assert clock.monotonic() - started == pytest.approx(0.5)
    await builder.aclose()


async def test_a_full_window_is_dispatched_at_once(clock: VirtualClock) -> None:
    batch = Batch("batch", max_batch_size=10)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=60.0)
    started = clock.monotonic()
    await build_each(builder, keys(*SUBJECTS[:10]))
    assert [len(call) for call in batch.calls] == [10]
    assert clock.monotonic() == started
    await builder.aclose()


# -- each build's own deadline and cancellation --------------------------------------------


async def test_one_builds_deadline_does_not_fail_the_others(clock: VirtualClock) -> None:
    batch = Batch("batch", delay=1.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    hurried, patient = await asyncio.gather(
        builder.build([key("a")], deadline_seconds=0.5, strict=False),
        builder.build([key("b")], deadline_seconds=5.0),
    )
    assert (len(batch.calls), batch.cancelled) == (1, 0)  # the call went on for b
    error = hurried.errors[key("a")]
    assert failure_types(error) == [("batch", "SnapshotDeadlineExceededError")]
    assert "snapshot deadline exceeded while calling source batch" in str(error)
    assert "while resolving" not in str(error)  # B-TIME-3: batch calls name no key
    assert (hurried.diagnostics.batch_calls, patient.diagnostics.batch_calls) == (1, 1)
    assert patient.value(key("b"))["subject"] == "b"
    health = await builder.health_snapshot()
    assert health.deadline_exceeded_count == 1
    await assert_quiet(builder)
    await builder.aclose()


async def test_a_deadline_while_the_call_waits_for_capacity_says_so(clock: VirtualClock) -> None:
    gate = Gate()

    async def held(_key: ResourceKey, _ctx: FetchContext) -> str:
        await gate.wait()
        return "held"

    hog = Single("hog", 0, held, supports=lambda k: k.name == "hog")
    batch = Batch("batch", supports=lambda k: k.name == "price")
    builder = make_builder(
        [hog, batch], clock, default_policy=LONG, batch_window_seconds=0.0, max_concurrency=1
    )
    hogging = asyncio.ensure_future(builder.build([key("h", "hog")]))
    await gate.arrived.wait()
    hurried_task = asyncio.ensure_future(
        builder.build([key("a")], deadline_seconds=0.5, strict=False)
    )
    patient_task = asyncio.ensure_future(builder.build([key("b")], deadline_seconds=5.0))
    await asyncio.sleep(1.0)
    gate.open()
    hurried, patient, _ = await asyncio.gather(hurried_task, patient_task, hogging)
    message = str(hurried.errors[key("a")])
    assert "snapshot deadline exceeded while waiting for capacity for source batch" in message
    assert patient.value(key("b"))["subject"] == "b"
    assert [len(call) for call in batch.calls] == [2]  # a was in the call when it was made
    await assert_quiet(builder)
    await builder.aclose()


async def test_a_builds_later_deadline_extends_its_shared_call(clock: VirtualClock) -> None:
    batch = Batch("batch", delay=1.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    first = asyncio.ensure_future(builder.build([key("a")], deadline_seconds=0.5))
    await settle()
    # Another build joins a's flight with more time: the shared call goes on for it.
    joiner = await builder.build([key("a")], deadline_seconds=5.0)
    assert joiner.value(key("a"))["subject"] == "a"
    assert (len(batch.calls), batch.cancelled) == (1, 0)
    with pytest.raises(SnapshotBuildError):  # the first build's own deadline still holds
        await first
    await builder.aclose()


async def test_cancelling_one_build_leaves_the_shared_call_running(clock: VirtualClock) -> None:
    batch = Batch("batch", delay=1.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    doomed = asyncio.ensure_future(builder.build([key("a")]))
    kept = asyncio.ensure_future(builder.build([key("b")]))
    await asyncio.sleep(0.5)
    doomed.cancel()
    snapshot = await kept
    assert doomed.cancelled()
    assert snapshot.value(key("b"))["subject"] == "b"
    assert (len(batch.calls), batch.cancelled, batch.finished) == (1, 0, 1)
    await assert_quiet(builder)
    await builder.aclose()


async def test_a_call_nobody_waits_for_any_more_is_cancelled(clock: VirtualClock) -> None:
    batch = Batch("batch", delay=1.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    builds = [asyncio.ensure_future(builder.build([k])) for k in keys("a", "b")]
    await asyncio.sleep(0.5)
    for build in builds:
        build.cancel()
    await asyncio.gather(*builds, return_exceptions=True)
    await settle()
    assert (len(batch.calls), batch.cancelled) == (1, 1)
    await assert_quiet(builder)
    await builder.aclose()


async def test_a_build_cancelled_while_gathering_drops_out(clock: VirtualClock) -> None:
    batch = Batch("batch")
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=1.0)
    doomed = asyncio.ensure_future(builder.build([key("a")]))
    kept = asyncio.ensure_future(builder.build([key("b")]))
    await asyncio.sleep(0.5)
    doomed.cancel()
    snapshot = await kept
    assert [[k.subject for k in call] for call in batch.calls] == [["b"]]
    assert snapshot.value(key("b"))["subject"] == "b"
    await builder.aclose()


# -- per-key errors, capacity, retries, circuits -------------------------------------------


async def test_per_key_errors_go_only_to_their_builds(clock: VirtualClock) -> None:
    def handler(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        served: dict[ResourceKey, Any] = {}
        for k in ks:
            if k.subject == "stale":
                served[k] = payload("old", observed_at=clock.now() - 7200.0)
            elif k.subject != "gone":
                served[k] = k.subject
        return served

    batch = Batch("batch", 10, handler)
    fallback = Single("fallback", 0)
    builder = make_builder([batch, fallback], clock, default_policy=LONG, batch_window_seconds=0.0)
    gone, stale, fine = await build_each(builder, keys("gone", "stale", "fine"))
    assert len(batch.calls) == 1
    assert gone.value(key("gone"))["source"] == "fallback"
    assert stale.value(key("stale"))["source"] == "fallback"
    assert fine.value(key("fine")) == "fine"
    assert fallback.calls == keys("gone", "stale")  # each failed key alone went on
    await builder.aclose()

    strict = make_builder([Batch("batch", 0, handler)], clock, batch_window_seconds=0.0)
    gone, fine = await build_each(strict, keys("gone", "fine"), strict=False)
    error = gone.errors[key("gone")]
    assert failure_types(error) == [("batch", "SourceUnavailableError")]
    assert "batch source batch omitted resource market:price:gone" in str(error)
    assert (dict(fine.errors), fine.value(key("fine"))) == ({}, "fine")
    await strict.aclose()


async def test_a_shared_call_takes_one_capacity_slot(clock: VirtualClock) -> None:
    gate = Gate()

    async def held(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        await gate.wait()
        return {k: k.subject for k in ks}

    batch = Batch("batch", 0, held, max_concurrency=4)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    builds = asyncio.ensure_future(build_each(builder, keys(*SUBJECTS)))
    await gate.arrived.wait()
    capacity = await builder.capacity_snapshot()
    assert (capacity["batch"].in_use, capacity["__global__"].in_use) == (1, 1)
    gate.open()
    assert len(await builds) == 50
    assert batch.peak == 1
    await assert_quiet(builder)
    await builder.aclose()


async def test_retries_are_per_call(clock: VirtualClock) -> None:
    attempts: list[int] = []

    def flaky(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        attempts.append(len(ks))
        if len(attempts) == 1:
            raise SourceUnavailableError("try again")
        return {k: k.subject for k in ks}

    builder = make_builder(
        [Batch("batch", 0, flaky)],
        clock,
        default_policy=LONG,
        batch_window_seconds=0.0,
        retry_policy=RetryPolicy(max_attempts=2, base_delay_seconds=0.1, jitter_ratio=0.0),
    )
    snapshots = await build_each(builder, keys(*SUBJECTS[:5]))
    assert attempts == [5, 5]
    for snapshot in snapshots:
        assert (snapshot.diagnostics.retries, snapshot.diagnostics.batch_calls) == (1, 2)
        (value,) = snapshot.values()
        assert value.attempts == 2
    await builder.aclose()


async def test_a_failed_shared_call_fails_every_key_in_it(clock: VirtualClock) -> None:
    def broken(_ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        raise ValueError("down")

    builder = make_builder([Batch("batch", 0, broken)], clock, batch_window_seconds=0.0)
    snapshots = await build_each(builder, keys("a", "b"), strict=False)
    for snapshot in snapshots:
        (error,) = snapshot.errors.values()
        assert failure_types(error) == [("batch", "ValueError")]
    await builder.aclose()


async def test_circuits_record_each_shared_call_once(clock: VirtualClock) -> None:
    def half(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        return {k: k.subject for k in ks if k.subject != "gone"}

    policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1), circuit=CircuitBreakerPolicy(failure_threshold=1)
    )
    windows: dict[float | None, CircuitState] = {}
    for window in (None, 0.0):
        builder = make_builder(
            [Batch("batch", 0, half, resilience_policy=policy)],
            clock,
            batch_window_seconds=window,
        )
        await build_each(builder, keys("gone", "here"), strict=False)
        windows[window] = await builder.circuit_breaker.state_for("batch")
        await builder.aclose()
    # Alone, the call for "gone" got nothing valid: a failure (B-SRC-5) that opens the circuit.
    # Shared, the one call got a valid payload for "here": a success.
    assert windows == {None: CircuitState.OPEN, 0.0: CircuitState.CLOSED}


async def test_background_refreshes_do_not_share_calls(clock: VirtualClock) -> None:
    batch = Batch("batch")
    swr = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=100.0, refresh_mode="stale_while_revalidate"
    )
    builder = make_builder([batch], clock, default_policy=swr, batch_window_seconds=0.0)
    await builder.build(keys("a", "b"))
    await asyncio.sleep(2.0)
    await asyncio.gather(builder.build([key("a")]), builder.build([key("b")]))
    await builder.wait_for_refreshes()
    assert [len(call) for call in batch.calls] == [2, 1, 1]
    for context in batch.contexts[1:]:
        assert context.metadata["background_refresh"] is True  # B-DIAG-4
    await builder.aclose()


async def test_no_task_is_left_after_aclose(clock: VirtualClock) -> None:
    batch = Batch("batch", delay=10.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=0.0)
    builds = [asyncio.ensure_future(builder.build([k])) for k in keys("a", "b", "c")]
    await asyncio.sleep(1.0)
    await builder.aclose()
    await asyncio.gather(*builds, return_exceptions=True)
    await settle()
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_the_sync_facade_shares_calls_between_threads() -> None:
    calls: list[int] = []
    source = counting_source(calls, max_batch_size=8, run_sync_in_thread=False)
    # A long window that closes when full: deterministic without waiting in real time.
    builder = SnapshotBuilder([source], default_policy=LONG, batch_window_seconds=60.0)
    wanted = keys(*SUBJECTS[:8])
    results: dict[ResourceKey, Any] = {}
    with SyncSnapshotBuilder(builder) as facade:

        def build(k: ResourceKey) -> None:
            results[k] = facade.build([k]).value(k)

        threads = [threading.Thread(target=build, args=(k,)) for k in wanted]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert calls == [8]
    assert results == {k: k.subject for k in wanted}


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("0.1", TypeError, "batch_window_seconds must be a number, got str"),
        (True, TypeError, "batch_window_seconds must be a number, got bool"),
        (-0.5, ValueError, "batch_window_seconds must be >= 0.0, got -0.5"),
        (math.inf, ValueError, "batch_window_seconds must be finite, got inf"),
        (math.nan, ValueError, "batch_window_seconds must be finite, got nan"),
    ],
)
def test_bad_windows_are_refused(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        SnapshotBuilder([Batch("batch")], batch_window_seconds=value)  # type: ignore[arg-type]
    with pytest.raises(error, match=f"^{message}$"):
        CallableBatchSource(
            name="b",
            priority=0,
            supports=lambda _key: True,
            fetcher=lambda ks, _ctx: {},
            batch_window_seconds=value,  # type: ignore[arg-type]
        )
    source = Batch("custom")
    source.batch_window_seconds = value  # type: ignore[attr-defined]
    with pytest.raises(error, match=f"^source 'custom' {message}$"):
        SnapshotBuilder([source])


def test_good_windows_are_kept() -> None:
    assert SnapshotBuilder([Batch("b")], batch_window_seconds=0).batch_window_seconds == 0.0
    source = CallableBatchSource(
        name="b",
        priority=0,
        supports=lambda _key: True,
        fetcher=lambda ks, _ctx: {},
        batch_window_seconds=0.25,
    )
    assert source.batch_window_seconds == 0.25


# -- the window changes calls, never results -----------------------------------------------

_UNIVERSE = [key(subject) for subject in "abcdef"]
_plans = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_UNIVERSE), min_size=1, max_size=4, unique=True),
        st.sampled_from([0.0, 0.0, 0.03, 0.06]),  # when the build starts
        st.sampled_from([None, 0.05, 0.15, 0.4]),  # its deadline
        st.booleans(),  # cancelled at 0.12
    ),
    min_size=1,
    max_size=6,
)


def _outcome(result: Snapshot | BaseException) -> object:
    if isinstance(result, BaseException):
        return type(result).__name__
    values = {k: (v.value, v.source, v.attempts) for k, v in result.items()}
    errors = {
        k: [(f.source, f.error_type, f.message) for f in e.failures]  # type: ignore[attr-defined]
        for k, e in result.errors.items()
    }
    return values, errors


async def _run_plans(
    plans: list[tuple[list[ResourceKey], float, float | None, bool]], window: float | None
) -> list[object]:
    def handler(ks: tuple[ResourceKey, ...], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        return {k: f"batch-{k.subject}" for k in ks if k.subject not in "be"}  # b, e omitted

    no_trip = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1), circuit=CircuitBreakerPolicy(failure_threshold=1000)
    )
    batch = Batch("batch", 10, handler, delay=0.1, max_batch_size=3, resilience_policy=no_trip)
    fallback = Single("fallback", 0, lambda k, _c: f"single-{k.subject}", delay=0.1)
    clock = VirtualClock()
    builder = make_builder(
        [batch, fallback],
        clock,
        default_policy=LONG,
        batch_window_seconds=window,
        default_resilience=no_trip,
    )

    # One driver starts the builds, in plan order at each instant. Builds that each slept until
    # the same instant would start in the order the loop's timer heap pops equal times, and
    # the window's own timers change that order: the two runs would not be the same plans.
    loop = asyncio.get_running_loop()
    tasks: dict[int, asyncio.Future[Snapshot]] = {}
    for index in sorted(range(len(plans)), key=lambda index: plans[index][1]):
        wanted, start, deadline, _ = plans[index]
        if start > loop.time():
            await asyncio.sleep(start - loop.time())
        tasks[index] = asyncio.ensure_future(
            builder.build(wanted, deadline_seconds=deadline, strict=False)
        )
    await asyncio.sleep(0.12 - loop.time())
    for index, (_, _, _, cancel) in enumerate(plans):
        if cancel:
            tasks[index].cancel()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    await builder.aclose()
    by_plan = dict(zip(tasks, results, strict=True))
    return [_outcome(by_plan[index]) for index in range(len(plans))]


@settings(max_examples=60, deadline=None)
@given(plans=_plans)
# Three builds start at 0.06; whichever claims b first owns its flight (and c's fate with it).
@example(
    plans=[
        ([key("a")], 0.0, 0.05, False),
        ([key("b"), key("c")], 0.06, 0.05, False),
        ([key("a")], 0.06, None, False),
        ([key("b")], 0.06, None, False),
    ]
)
def test_every_build_gets_what_it_gets_without_the_window(
    plans: list[tuple[list[ResourceKey], float, float | None, bool]],
) -> None:
    # Window 0.0: the same loop turn, so no virtual time passes and deadlines fall alike (a
    # positive window trades that much latency for larger calls, by design).
    with VirtualTimeRunner() as runner:
        alone = runner.run(_run_plans(plans, None))
    with VirtualTimeRunner() as runner:
        shared = runner.run(_run_plans(plans, 0.0))
    assert shared == alone
