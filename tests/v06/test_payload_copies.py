"""Section 5 of the 0.6 API: the bounded payload-copy runner, copy health, controlled shutdown.

Async tests run on virtual time. While a worker thread runs, virtual time stands still (the
loop waits for threads for real), so the few tests about a copy outliving a deadline or a
shutdown budget run on a plain event loop, with a copier blocked on a ``threading.Event``
that the test releases: their budgets are a few real milliseconds and cannot flake (the
copy cannot end before the test releases it).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import pickle
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import pytest

from coalestra import (
    AsyncMemoryCache,
    BuilderHealth,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CoalestraError,
    FreshnessPolicy,
    InMemoryMetrics,
    NullEventSink,
    PayloadCopyHealth,
    PayloadCopyShutdownTimeoutError,
    PayloadCopySubsystemClosedError,
    ResourceKey,
    ResourcePublisher,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotValue,
    SyncSnapshotBuilder,
    SystemClock,
    capabilities,
)

T = TypeVar("T")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=600.0)
A, B, C = (ResourceKey("md", "quote", s) for s in "ABC")


class Probe:
    """A payload part recording the threads that deep-copied it."""

    def __init__(self, threads: list[int]) -> None:
        self.threads = threads

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        self.threads.append(threading.get_ident())
        return Probe(self.threads)


def large(threads: list[int]) -> dict[str, Any]:
    """A payload the cheap estimate calls large (a 1,000-row table), with a probe."""
    return {"rows": [[i] for i in range(1000)], "probe": Probe(threads)}


def small(threads: list[int]) -> dict[str, Any]:
    return {"price": 1.5, "probe": Probe(threads)}


def source_of(make: Callable[[ResourceKey], Any], name: str = "feed") -> CallableSource:
    async def fetch(key: ResourceKey, _ctx: Any) -> Any:
        return make(key)

    return CallableSource(name=name, priority=1, supports=lambda key: True, fetcher=fetch)


def builder_of(source: Any, **options: Any) -> SnapshotBuilder:
    options.setdefault("default_policy", LONG)
    return SnapshotBuilder([source], **options)


class Gate:
    """A custom copier blocked until :meth:`release` (in a worker thread: not the loop's)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, value: T) -> T:
        self.calls += 1
        self.entered.set()
        self.opened.wait(10.0)
        return copy.deepcopy(value)

    def release(self) -> None:
        self.opened.set()


def gated_builder(gate: Gate, **options: Any) -> SnapshotBuilder:
    """A builder whose own copies all go through ``gate`` in worker threads (its cache copies
    inline, so only the builder's component is blocked)."""
    return builder_of(
        source_of(lambda key: {"v": key.subject}),
        payload_copier=gate,
        run_payload_copies_in_thread=True,
        cache=AsyncMemoryCache(run_payload_copies_in_thread=False),
        **options,
    )


def on_real_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a plain event loop (real time), for thread-bound waits."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (set by a worker thread: no loop event to wait on). Zero-length
    sleeps: virtual time stands still while a worker thread runs, so a timer would not fire."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


def leftover_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


# --- options and their validation -----------------------------------------------------------


def test_builder_defaults_resolve_to_threads_with_the_builtin_copier() -> None:
    builder = builder_of(source_of(str))
    assert builder.run_payload_copies_in_thread is True
    assert builder.max_copy_concurrency == 4
    assert builder.copy_shutdown_timeout_seconds == 5.0


def test_builder_none_keeps_a_custom_copier_inline() -> None:
    builder = builder_of(source_of(str), payload_copier=copy.deepcopy)
    assert builder.run_payload_copies_in_thread is False


@pytest.mark.parametrize("given", [True, False])
def test_builder_explicit_flag_is_kept(given: bool) -> None:
    builder = builder_of(
        source_of(str), payload_copier=copy.deepcopy, run_payload_copies_in_thread=given
    )
    assert builder.run_payload_copies_in_thread is given


def test_builder_options_are_readable() -> None:
    builder = builder_of(source_of(str), max_copy_concurrency=2, copy_shutdown_timeout_seconds=0.5)
    assert builder.max_copy_concurrency == 2
    assert builder.copy_shutdown_timeout_seconds == 0.5


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"run_payload_copies_in_thread": 1}, TypeError),
        ({"run_payload_copies_in_thread": "yes"}, TypeError),
        ({"max_copy_concurrency": True}, TypeError),
        ({"max_copy_concurrency": 2.0}, TypeError),
        ({"max_copy_concurrency": "4"}, TypeError),
        ({"max_copy_concurrency": 0}, ValueError),
        ({"max_copy_concurrency": -1}, ValueError),
        ({"copy_shutdown_timeout_seconds": "5"}, TypeError),
        ({"copy_shutdown_timeout_seconds": True}, TypeError),
        ({"copy_shutdown_timeout_seconds": None}, TypeError),
        ({"copy_shutdown_timeout_seconds": 0}, ValueError),
        ({"copy_shutdown_timeout_seconds": -1.0}, ValueError),
        ({"copy_shutdown_timeout_seconds": math.nan}, ValueError),
        ({"copy_shutdown_timeout_seconds": math.inf}, ValueError),
    ],
)
def test_builder_rejects_bad_copy_options(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        builder_of(source_of(str), **options)


def publisher(**options: Any) -> ResourcePublisher:
    return ResourcePublisher(
        cache=AsyncMemoryCache(),
        clock=SystemClock(),
        policy_resolver=builder_of(source_of(str)).policy_resolver,
        metrics=InMemoryMetrics(),
        events=NullEventSink(),
        **options,
    )


def test_publisher_copy_options_default_and_resolve() -> None:
    assert publisher().run_payload_copies_in_thread is True
    assert publisher().max_copy_concurrency == 4
    assert publisher(payload_copier=copy.deepcopy).run_payload_copies_in_thread is False
    assert publisher(run_payload_copies_in_thread=False).run_payload_copies_in_thread is False
    assert publisher(max_copy_concurrency=2).max_copy_concurrency == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"run_payload_copies_in_thread": 0}, TypeError),
        ({"max_copy_concurrency": False}, TypeError),
        ({"max_copy_concurrency": 1.5}, TypeError),
        ({"max_copy_concurrency": 0}, ValueError),
    ],
)
def test_publisher_rejects_bad_copy_options(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        publisher(**options)


def test_cache_copy_attributes_and_fresh_health() -> None:
    cache = AsyncMemoryCache(max_copy_concurrency=3)
    assert cache.run_payload_copies_in_thread is True
    assert cache.max_copy_concurrency == 3
    health = cache.copy_health_snapshot()
    assert health == PayloadCopyHealth(run_in_thread=True, max_concurrency=3)


# --- PayloadCopyHealth and the errors ---------------------------------------------------------


def test_payload_copy_health_fields_in_order_with_defaults() -> None:
    fields = [(f.name, f.default) for f in dataclasses.fields(PayloadCopyHealth)]
    assert fields == [
        ("run_in_thread", dataclasses.MISSING),
        ("max_concurrency", dataclasses.MISSING),
        ("active_copies", 0),
        ("waiting_for_capacity", 0),
        ("peak_active_copies", 0),
        ("peak_waiting_for_capacity", 0),
        ("started_count", 0),
        ("completed_count", 0),
        ("failure_count", 0),
        ("timeout_count", 0),
        ("capacity_timeout_count", 0),
        ("capacity_wait_count", 0),
        ("average_wait_ms", 0.0),
        ("max_wait_ms", 0.0),
        ("average_duration_ms", 0.0),
        ("max_duration_ms", 0.0),
        ("accepting_copies", True),
        ("shutdown_started", False),
        ("shutdown_complete", False),
        ("shutdown_incomplete", False),
        ("shutdown_timeout_count", 0),
        ("active_at_last_shutdown_timeout", 0),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PayloadCopyHealth(True, 4).active_copies = 1  # type: ignore[misc]


def test_shutdown_timeout_error_attributes_and_pickling() -> None:
    error = PayloadCopyShutdownTimeoutError(
        timeout_seconds=2, active_components={"builder": 2, "cache": 1}
    )
    assert isinstance(error, CoalestraError)
    assert error.timeout_seconds == 2.0
    assert isinstance(error.timeout_seconds, float)
    assert dict(error.active_components) == {"builder": 2, "cache": 1}
    assert error.active_copies == 3
    with pytest.raises(TypeError):
        error.active_components["x"] = 1  # type: ignore[index]
    again = pickle.loads(pickle.dumps(error))
    assert (again.timeout_seconds, dict(again.active_components)) == (
        2.0,
        {"builder": 2, "cache": 1},
    )


def test_closed_error_names_its_component_and_pickles() -> None:
    error = PayloadCopySubsystemClosedError(component="cache")
    assert isinstance(error, CoalestraError)
    assert error.component == "cache"
    assert "cache" in str(error)
    assert pickle.loads(pickle.dumps(error)).component == "cache"


def test_builder_health_copy_fields_default_and_are_read_only() -> None:
    health = BuilderHealth(False, 0, 0, 0)
    assert dict(health.payload_copy_components) == {}
    assert health.active_payload_copies == 0
    assert health.payload_copy_shutdown_incomplete is False
    copied = BuilderHealth(False, 0, 0, 0, payload_copy_components={"builder": 1})
    with pytest.raises(TypeError):
        copied.payload_copy_components["x"] = 2  # type: ignore[index]


# --- which copies leave the loop --------------------------------------------------------------


async def test_large_source_payload_is_copied_in_a_worker_thread() -> None:
    threads: list[int] = []
    builder = builder_of(source_of(lambda key: large(threads)))
    snapshot = await builder.build([A])
    assert threads
    assert threading.get_ident() not in threads
    assert snapshot.value(A)["rows"][999] == [999]
    health = await builder.health_snapshot()
    # Two jobs: the source boundary, and the copy the build hands out.
    assert health.payload_copy_components["builder"].started_count == 2
    assert health.payload_copy_components["builder"].completed_count == 2
    await builder.aclose()


async def test_small_and_immutable_payloads_stay_on_the_loop() -> None:
    threads: list[int] = []
    payloads = {A: small(threads), B: ("tick", 1)}
    builder = builder_of(source_of(lambda key: payloads[key]))
    snapshot = await builder.build([A, B])
    # The small dict: source boundary and hand-out, both inline (the built-in cache keeps the
    # build's own private value, and makes no copy for a write result the build does not read).
    assert threads == [threading.get_ident()] * 2
    assert snapshot.value(B) is payloads[B]  # immutable: shared, never copied
    health = await builder.health_snapshot()
    assert health.payload_copy_started_count == 0
    await builder.aclose()


async def test_false_copies_large_payloads_inline() -> None:
    threads: list[int] = []
    builder = builder_of(source_of(lambda key: large(threads)), run_payload_copies_in_thread=False)
    await builder.build([A])
    # The builder's copies (source boundary, hand-out) inline; the cache's own are its own.
    assert threads[0] == threads[-1] == threading.get_ident()
    assert (await builder.health_snapshot()).payload_copy_components["builder"].started_count == 0
    await builder.aclose()


async def test_true_offloads_a_custom_copier_and_every_mutable_payload() -> None:
    seen: list[int] = []

    def copier(value: T) -> T:
        seen.append(threading.get_ident())
        return copy.deepcopy(value)

    builder = builder_of(
        source_of(lambda key: {"v": 1}),
        payload_copier=copier,
        run_payload_copies_in_thread=True,
        cache=AsyncMemoryCache(payload_copier=copier, run_payload_copies_in_thread=False),
    )
    await builder.build([A])
    assert seen[0] != threading.get_ident()  # the source boundary, in a worker thread
    await builder.aclose()


async def test_one_worker_job_per_batch_call() -> None:
    threads: list[int] = []

    async def fetch_many(keys: Any, _ctx: Any) -> Mapping[ResourceKey, Any]:
        return {key: large(threads) for key in keys}

    source = CallableBatchSource(
        name="batch", priority=1, supports=lambda key: True, fetcher=fetch_many
    )
    builder = builder_of(source)
    await builder.build([A, B, C])
    health = await builder.health_snapshot()
    # Source boundary and hand-out: the built-in cache keeps the build's own private values.
    assert len(threads) == 3 * 2
    # One job for the batch call's three payloads, one for the build's three hand-outs.
    assert health.payload_copy_components["builder"].started_count == 2
    await builder.aclose()


async def test_uncopyable_payload_fails_at_its_source() -> None:
    class Broken:
        def __deepcopy__(self, memo: Any) -> Any:
            raise RuntimeError("no copies")

    builder = builder_of(source_of(lambda key: [Broken()]), run_payload_copies_in_thread=True)
    snapshot = await builder.build([A], strict=False)
    failure = snapshot.errors[A].failures[0]
    assert failure.error_type == "PayloadIsolationError"
    # The job ran; the copy inside it failed for that key only.
    assert (await builder.health_snapshot()).payload_copy_completed_count == 1
    await builder.aclose()


async def test_derived_source_gets_its_large_dependencies_copied_off_the_loop() -> None:
    threads: list[int] = []
    total = ResourceKey("calc", "rows", "A")
    seen: list[Any] = []

    async def derive(key: ResourceKey, deps: Any, _ctx: Any) -> int:
        seen.append(deps.value(A))
        return len(deps.value(A)["rows"])

    derived = CallableDerivedSource(
        name="calc",
        priority=2,
        supports=lambda key: key.namespace == "calc",
        dependencies=lambda key: (A,),
        deriver=derive,
    )
    rows = CallableSource(
        name="rows",
        priority=1,
        supports=lambda key: key.namespace == "md",
        fetcher=lambda key, _ctx: large(threads),
    )
    builder = SnapshotBuilder([derived, rows], default_policy=LONG)
    snapshot = await builder.build([total])
    assert snapshot.value(total) == 1000
    assert seen
    assert threads
    assert threading.get_ident() not in threads  # no copy of the table ran on the loop
    await builder.aclose()


# --- health ---------------------------------------------------------------------------------


async def test_health_components_builder_and_default_cache() -> None:
    builder = builder_of(source_of(str))
    health = await builder.health_snapshot()
    assert list(health.payload_copy_components) == ["builder", "cache"]
    assert all(isinstance(h, PayloadCopyHealth) for h in health.payload_copy_components.values())
    assert health.payload_copy_components["cache"] == builder.cache.copy_health_snapshot()  # type: ignore[attr-defined]
    await builder.aclose()


async def test_health_has_no_cache_component_with_a_given_cache() -> None:
    builder = builder_of(source_of(str), cache=AsyncMemoryCache())
    health = await builder.health_snapshot()
    assert list(health.payload_copy_components) == ["builder"]
    await builder.aclose()


async def test_health_aggregates_sum_the_components() -> None:
    threads: list[int] = []
    builder = builder_of(
        source_of(lambda key: large(threads)), cache_run_payload_copies_in_thread=True
    )
    await builder.build([A])
    await builder.build([A])  # a hit: the cache copies what it hands out (the write kept ours)
    health = await builder.health_snapshot()
    parts = health.payload_copy_components.values()
    assert health.payload_copy_components["cache"].started_count > 0
    assert health.payload_copy_started_count == sum(h.started_count for h in parts)
    assert health.payload_copy_completed_count == sum(h.completed_count for h in parts)
    assert health.active_payload_copies == 0
    assert health.waiting_for_copy_capacity == 0
    await builder.aclose()


async def test_concurrency_limit_makes_copies_wait_and_counts_it() -> None:
    gate = Gate()
    builder = gated_builder(gate, max_copy_concurrency=1)
    first = asyncio.ensure_future(builder.build([A]))
    second = asyncio.ensure_future(builder.build([B]))
    await wait_until(lambda: builder._copies.components["builder"].health().waiting_for_capacity)
    health = await builder.health_snapshot()
    assert (health.active_payload_copies, health.waiting_for_copy_capacity) == (1, 1)
    gate.release()
    await asyncio.gather(first, second)
    part = (await builder.health_snapshot()).payload_copy_components["builder"]
    assert part.peak_active_copies == 1
    assert part.peak_waiting_for_capacity == 1
    assert part.capacity_wait_count >= 1
    assert part.completed_count == part.started_count == 4  # two source calls, two hand-outs
    await builder.aclose()


# --- deadlines (real time: a thread-bound wait) -------------------------------------------------


def test_copy_time_counts_against_the_deadline() -> None:
    gate = Gate()

    async def main() -> None:
        builder = gated_builder(gate)
        snapshot = await builder.build([A], strict=False, deadline_seconds=0.02)
        gate.release()
        assert snapshot.errors[A].failures[0].error_type == "SnapshotDeadlineExceededError"
        health = await builder.health_snapshot()
        assert health.payload_copy_timeout_count == 1
        assert health.deadline_exceeded_count >= 1
        await builder.aclose()
        assert leftover_tasks() == set()

    on_real_loop(main)


def test_copy_capacity_waits_count_against_the_deadline() -> None:
    gate = Gate()

    async def main() -> None:
        builder = gated_builder(gate, max_copy_concurrency=1)
        holder = asyncio.ensure_future(builder.build([A]))
        await wait_until(gate.entered.is_set)
        with pytest.raises(SnapshotBuildError) as caught:
            await builder.build([B], deadline_seconds=0.02)
        assert caught.value.errors[B].failures[0].error_type == "SnapshotDeadlineExceededError"
        assert (await builder.health_snapshot()).payload_copy_capacity_timeout_count == 1
        gate.release()
        await holder
        await builder.aclose()

    on_real_loop(main)


# --- builder shutdown -------------------------------------------------------------------------


async def test_aclose_completes_every_component() -> None:
    builder = builder_of(source_of(lambda key: {"v": 1}))
    await builder.build([A])
    await builder.aclose()
    health = await builder.health_snapshot()
    for part in health.payload_copy_components.values():
        assert (part.accepting_copies, part.shutdown_started, part.shutdown_complete) == (
            False,
            True,
            True,
        )
        assert part.shutdown_incomplete is False
    assert health.payload_copy_shutdown_incomplete is False
    await builder.aclose()  # idempotent
    await builder.wait_for_payload_copy_shutdown()
    await builder.wait_for_background_shutdown()
    assert leftover_tasks() == set()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"copy_shutdown_timeout_seconds": "1"}, TypeError),
        ({"copy_shutdown_timeout_seconds": True}, TypeError),
        ({"copy_shutdown_timeout_seconds": 0}, ValueError),
        ({"copy_shutdown_timeout_seconds": -2}, ValueError),
        ({"copy_shutdown_timeout_seconds": math.nan}, ValueError),
        ({"copy_shutdown_timeout_seconds": math.inf}, ValueError),
        ({"observability_shutdown_timeout_seconds": "1"}, TypeError),
        ({"observability_shutdown_timeout_seconds": False}, TypeError),
        ({"observability_shutdown_timeout_seconds": 0.0}, ValueError),
        ({"observability_shutdown_timeout_seconds": -1}, ValueError),
    ],
)
async def test_aclose_checks_both_budgets_before_closing_anything(
    options: dict[str, Any], error: type
) -> None:
    builder = builder_of(source_of(str))
    with pytest.raises(error):
        await builder.aclose(**options)
    assert not builder.closed
    assert (await builder.health_snapshot()).payload_copy_components["builder"].accepting_copies
    await builder.aclose(copy_shutdown_timeout_seconds=1.0)
    assert builder.closed


def test_shutdown_timeout_then_late_worker_completes() -> None:
    gate = Gate()

    async def main() -> None:
        builder = gated_builder(gate)
        # A background refresh is awaited by aclose(), so its copy is running at shutdown.
        session = builder.session()
        pending = asyncio.ensure_future(session.resolve([A]))
        await wait_until(gate.entered.is_set)
        pending.cancel()
        with pytest.raises(PayloadCopyShutdownTimeoutError) as caught:
            await builder.aclose(copy_shutdown_timeout_seconds=0.02)
        assert caught.value.timeout_seconds == 0.02
        assert dict(caught.value.active_components) == {"builder": 1}
        assert caught.value.active_copies == 1
        health = await builder.health_snapshot()
        assert health.payload_copy_shutdown_incomplete is True
        assert health.payload_copy_shutdown_timeout_count == 1
        assert health.payload_copy_active_at_last_shutdown_timeout == 1
        gate.release()
        await builder.wait_for_payload_copy_shutdown()
        part = (await builder.health_snapshot()).payload_copy_components["builder"]
        assert (part.shutdown_complete, part.shutdown_incomplete, part.active_copies) == (
            True,
            False,
            0,
        )
        await builder.wait_for_background_shutdown()

    on_real_loop(main)


# --- the cache --------------------------------------------------------------------------------


def value_of(key: ResourceKey, payload: Any, observed_at: float = 1.0) -> SnapshotValue[Any]:
    return SnapshotValue(key, payload, "feed", observed_at, observed_at, 0.0, False, False, 0.0)


async def test_cache_get_and_set_after_aclose_raise_closed() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value_of(A, {"v": 1}))
    await cache.aclose()
    await cache.aclose()  # idempotent
    for call in (
        lambda: cache.get(A, now=2.0, policy=LONG),
        lambda: cache.get_many([A], now=2.0, policies={A: LONG}),
        lambda: cache.set(value_of(A, {"v": 2}, 3.0)),
        lambda: cache.set_many([value_of(A, {"v": 2}, 3.0)]),
        lambda: cache.set_if_newer(value_of(A, {"v": 2}, 3.0)),
    ):
        with pytest.raises(PayloadCopySubsystemClosedError) as caught:
            await call()
        assert caught.value.component == "cache"
    health = cache.copy_health_snapshot()
    assert (health.accepting_copies, health.shutdown_started, health.shutdown_complete) == (
        False,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("budget", "error"), [("1", TypeError), (0, ValueError), (math.nan, ValueError)]
)
async def test_cache_aclose_payload_copies_checks_its_budget(budget: Any, error: type) -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(error):
        await cache.aclose_payload_copies(timeout_seconds=budget)
    assert cache.copy_health_snapshot().accepting_copies


async def test_cache_counts_its_thread_copies() -> None:
    cache = AsyncMemoryCache(run_payload_copies_in_thread=True)
    await cache.set(value_of(A, {"v": 1}))
    await cache.get(A, now=2.0, policy=LONG)
    health = cache.copy_health_snapshot()
    assert health.started_count == health.completed_count == 3  # stored, result, read
    await cache.aclose_payload_copies(timeout_seconds=1.0)


def test_cache_shutdown_fails_waiters_and_times_out_on_a_late_copy() -> None:
    gate = Gate()

    async def main() -> None:
        cache = AsyncMemoryCache(
            payload_copier=gate, run_payload_copies_in_thread=True, max_copy_concurrency=1
        )
        first = asyncio.ensure_future(cache.set(value_of(A, {"v": 1})))
        await wait_until(gate.entered.is_set)
        second = asyncio.ensure_future(cache.set(value_of(B, {"v": 2})))
        await wait_until(lambda: cache.copy_health_snapshot().waiting_for_capacity == 1)
        with pytest.raises(PayloadCopyShutdownTimeoutError) as caught:
            await cache.aclose_payload_copies(timeout_seconds=0.01)
        assert dict(caught.value.active_components) == {"cache": 1}
        with pytest.raises(PayloadCopySubsystemClosedError):
            await second
        assert cache.copy_health_snapshot().shutdown_incomplete
        gate.release()
        await asyncio.gather(first, return_exceptions=True)
        health = cache.copy_health_snapshot()
        assert (health.shutdown_complete, health.shutdown_incomplete) == (True, False)
        assert health.shutdown_timeout_count == 1
        assert health.active_at_last_shutdown_timeout == 1

    on_real_loop(main)


# --- publishers -------------------------------------------------------------------------------


async def test_publisher_aclose_refuses_later_publications() -> None:
    standalone = publisher()
    await standalone.publish(A, {"v": 1}, source="feed")
    await standalone.aclose()
    await standalone.aclose(timeout_seconds=1.0)  # idempotent
    with pytest.raises(PayloadCopySubsystemClosedError) as caught:
        await standalone.publish(A, {"v": 2}, source="feed")
    assert caught.value.component == "publisher"
    health = standalone.copy_health_snapshot()
    assert (health.accepting_copies, health.shutdown_complete) == (False, True)


@pytest.mark.parametrize(("budget", "error"), [(None, TypeError), (-1, ValueError)])
async def test_publisher_aclose_checks_its_budget(budget: Any, error: type) -> None:
    standalone = publisher()
    with pytest.raises(error):
        await standalone.aclose(timeout_seconds=budget)
    await standalone.publish(A, {"v": 1}, source="feed")  # still open


async def test_builder_publisher_shares_the_runner_and_closing_it_spares_the_builder() -> None:
    builder = builder_of(source_of(lambda key: {"v": 1}))
    assert (
        builder.publisher.copy_health_snapshot()
        == ((await builder.health_snapshot()).payload_copy_components["builder"])
    )
    await builder.publisher.aclose()
    with pytest.raises(PayloadCopySubsystemClosedError):
        await builder.publisher.publish(A, {"v": 2}, source="push")
    snapshot = await builder.build([A])  # the builder goes on
    assert snapshot.value(A) == {"v": 1}
    health = await builder.health_snapshot()
    assert health.payload_copy_components["builder"].accepting_copies
    await builder.aclose()


# --- sessions ---------------------------------------------------------------------------------


async def test_snapshot_async_copies_large_values_through_the_runner() -> None:
    threads: list[int] = []
    builder = builder_of(source_of(lambda key: large(threads)))
    session = builder.session()
    await session.resolve([A])
    before = (await builder.health_snapshot()).payload_copy_started_count
    threads.clear()
    snapshot = await session.snapshot_async()
    assert threads
    assert threading.get_ident() not in threads
    assert (await builder.health_snapshot()).payload_copy_started_count == before + 1
    snapshot.value(A)["rows"].clear()
    assert len((await session.snapshot_async()).value(A)["rows"]) == 1000
    assert session.snapshot().value(A)["rows"][0] == [0]
    await session.close()
    await builder.aclose()


async def test_snapshot_async_of_immutable_values_needs_no_job() -> None:
    builder = builder_of(source_of(lambda key: key.subject))
    session = builder.session()
    await session.resolve([A, B])
    started = (await builder.health_snapshot()).payload_copy_started_count
    snapshot = await session.snapshot_async()
    assert snapshot.value(A) == "A"
    assert (await builder.health_snapshot()).payload_copy_started_count == started
    await builder.aclose()


# --- the sync facade --------------------------------------------------------------------------


def test_sync_session_snapshot_uses_the_async_path() -> None:
    threads: list[int] = []
    sync = SyncSnapshotBuilder(builder_of(source_of(lambda key: large(threads))))
    with sync, sync.session() as session:
        session.resolve([A])
        started = sync.builder._copies.components["builder"].started
        threads.clear()
        snapshot = session.snapshot()
        assert threads
        assert threading.get_ident() not in threads
        assert sync.builder._copies.components["builder"].started == started + 1
        assert snapshot.value(A)["rows"][1] == [1]


def test_sync_close_propagates_the_copy_timeout_after_late_workers_end() -> None:
    gate = Gate()
    builder = gated_builder(gate)
    sync = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.02)
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            sync.build([A])
        except BaseException as error:  # the close cancels it
            outcome.append(error)

    caller = threading.Thread(target=build)
    caller.start()
    assert gate.entered.wait(5.0)
    releaser = threading.Timer(0.05, gate.release)
    releaser.start()
    with pytest.raises(PayloadCopyShutdownTimeoutError) as caught:
        sync.close()
    releaser.join()
    caller.join(5.0)
    assert caught.value.timeout_seconds == 0.02
    assert outcome  # the build in flight did not complete
    assert sync.closed
    # close() returned only after the late worker ended: the loop thread is gone.
    assert builder._copies.components["builder"].active == 0
    assert not sync._core.portal.thread.is_alive()


def test_sync_close_passes_its_budget_to_the_builder() -> None:
    budgets: list[dict[str, Any]] = []
    builder = builder_of(source_of(str))
    original = builder.aclose

    async def recording(**options: Any) -> None:
        budgets.append(options)
        await original(**options)

    builder.aclose = recording  # type: ignore[method-assign]
    SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.75).close()
    assert budgets[0] == {
        "copy_shutdown_timeout_seconds": 0.75,
        "observability_shutdown_timeout_seconds": 0.75,
    }


# --- capabilities -----------------------------------------------------------------------------


def test_capabilities_list_the_copy_features() -> None:
    for feature in (
        "payload_copy_health",
        "payload_copy_offload",
        "controlled_payload_copy_shutdown",
    ):
        assert capabilities().supports(feature)
