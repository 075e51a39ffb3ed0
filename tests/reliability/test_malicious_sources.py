"""Sources that misbehave on purpose: the snapshot, the cache and the builder must not suffer.

Each test plugs one malicious or buggy source into a builder (single, batch or derived where it
matters) and checks what the caller sees (a documented error or a value from the next source),
what the cache holds afterwards, and that nothing is left behind.

BaseException policy (decided here, per DESIGN "Never swallow CancelledError"):

* ``KeyboardInterrupt`` and ``SystemExit`` raised by a source propagate out of the event loop,
  as asyncio itself does for any task: they are never turned into a source failure. The keys of
  that resolution fail with ``SourceUnavailableError`` and the builder stays usable.
* Any other ``BaseException`` subclass ends that resolution: its keys fail with
  ``SourceUnavailableError``, the caller is not cancelled, the builder stays usable.
* A ``CancelledError`` raised by a source that nobody cancelled is that source's failure: the
  caller is not cancelled and the key goes on to its next source.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from tests.orchestration.conftest import Batch, Derived, Single, key, keys, make_builder, payload
from tests.reliability.conftest import leftovers, settle, task_baseline

from coalestra.core import (
    CoalestraError,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotBuildError,
    SourcePayload,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import CircuitBreakerPolicy, RetryPolicy, SourceResiliencePolicy
from coalestra.testing import VirtualClock, VirtualTimeRunner

A, B, C = keys("A", "B", "C")
D = key("D", name="derived")
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)


class Uncopyable:
    """A payload ``copy.deepcopy`` refuses."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("this object cannot be copied")


class Weird(BaseException):
    """A BaseException that is neither an interrupt, an exit nor a cancellation."""


def forged(value: Any, observed_at: Any) -> SourcePayload[Any]:
    """A payload whose ``observed_at`` skipped validation (a source forging a frozen field)."""
    made = SourcePayload(value)
    object.__setattr__(made, "observed_at", observed_at)
    return made


async def cached(builder: SnapshotBuilder, wanted: ResourceKey) -> Any:
    """What the builder's cache holds for ``wanted`` (read through the public cache API)."""
    lookup = await builder.cache.get(wanted, now=builder.clock.now(), policy=FOREVER)
    return None if lookup.value is None else lookup.value.value


def failure_types(snapshot: Snapshot, wanted: ResourceKey) -> list[str]:
    error = snapshot.errors[wanted]
    assert isinstance(error, ResourceResolutionError), repr(error)
    return [failure.error_type for failure in error.failures]


def one_source(kind: str, produce: Callable[[ResourceKey], Any], **options: Any) -> list[Any]:
    """A source of ``kind`` whose payload for a key is ``produce(key)``; for ``derived`` the
    derived key ``D`` depends on ``A``, served by a plain single source."""
    if kind == "single":
        return [Single("evil", 5, lambda k, _c: produce(k), **options)]
    if kind == "batch":
        return [Batch("evil", 5, lambda ks, _c: {k: produce(k) for k in ks}, **options)]
    return [
        Derived(
            "evil",
            5,
            deps=lambda _k: (A,),
            handler=lambda k, _s, _c: produce(k),
            supports=lambda k: k == D,
            **options,
        ),
        Single("plain", 1, supports=lambda k: k != D),
    ]


def target(kind: str) -> ResourceKey:
    return D if kind == "derived" else A


KINDS = ["single", "batch", "derived"]


# -- payloads mutated after they were returned --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("when", ["next_turn", "after_the_build"])
async def test_a_payload_mutated_after_return_changes_neither_snapshot_nor_cache(
    clock: VirtualClock, kind: str, when: str
) -> None:
    handed_out: list[dict[str, Any]] = []

    def produce(k: ResourceKey) -> dict[str, Any]:
        made = {"subject": k.subject, "items": [1, 2]}
        handed_out.append(made)
        if when == "next_turn":  # races the engine's own copy
            asyncio.get_running_loop().call_soon(made["items"].append, "mutated")
        return made

    builder = make_builder(one_source(kind, produce), clock, default_policy=LONG)
    wanted = target(kind)
    snapshot = await builder.build([wanted])
    for made in handed_out:
        made["items"].append("mutated later")
        made["subject"] = "mutated"
    await asyncio.sleep(0)

    original = {"subject": wanted.subject, "items": [1, 2]}
    assert snapshot.value(wanted) == original
    assert await cached(builder, wanted) == original
    assert (await builder.build([wanted])).value(wanted) == original
    await builder.aclose()


async def test_one_object_returned_for_two_keys_is_not_shared_between_them(
    clock: VirtualClock,
) -> None:
    shared = {"items": [1]}
    builder = make_builder([Batch("evil", 5, lambda ks, _c: dict.fromkeys(ks, shared))], clock)

    snapshot = await builder.build([A, B])
    snapshot.value(A)["items"].append("through A")

    assert snapshot.value(B) == {"items": [1]}
    assert await cached(builder, A) == {"items": [1]}
    assert await cached(builder, B) == {"items": [1]}
    await builder.aclose()


# -- payloads that cannot be copied ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["payload", "metadata"])
async def test_an_uncopyable_payload_is_reported_and_never_cached(
    clock: VirtualClock, kind: str, where: str
) -> None:
    def produce(_k: ResourceKey) -> Any:
        return Uncopyable() if where == "payload" else payload(1, tags=Uncopyable())

    builder = make_builder(one_source(kind, produce), clock)
    wanted = target(kind)
    snapshot = await builder.build([wanted], strict=False)

    assert failure_types(snapshot, wanted) == ["PayloadIsolationError"]
    assert await cached(builder, wanted) is None
    assert (await builder.build([wanted], strict=False)).errors  # still refused, not stored
    await builder.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_uncopyable_payload_falls_through_to_the_next_source(
    clock: VirtualClock, kind: str
) -> None:
    wanted = target(kind)
    backup = Single("backup", 0, supports=lambda k: k == wanted)
    builder = make_builder([*one_source(kind, lambda _k: Uncopyable()), backup], clock)

    snapshot = await builder.build([wanted])

    assert snapshot[wanted].source == "backup"
    assert await cached(builder, wanted) == {"source": "backup", "subject": wanted.subject}
    await builder.aclose()


# -- observation timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "stamp", [math.nan, math.inf, -math.inf, 100.0], ids=["nan", "inf", "-inf", "future"]
)
async def test_an_impossible_observed_at_is_a_protocol_error_and_never_cached(
    clock: VirtualClock, kind: str, stamp: float
) -> None:
    def produce(_k: ResourceKey) -> Any:
        return forged(1, clock.now() + stamp)  # NaN and inf cannot even be made honestly

    builder = make_builder(one_source(kind, produce), clock)
    wanted = target(kind)
    snapshot = await builder.build([wanted], strict=False)

    (error_type,) = failure_types(snapshot, wanted)
    assert error_type == "SourceProtocolError"  # internal classes are named by their public one
    assert await cached(builder, wanted) is None
    rejections = snapshot.diagnostics.future_timestamp_rejections
    assert rejections == (1 if stamp == 100.0 else 0)
    await builder.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slightly_future_observed_at_is_kept_with_age_zero_and_recorded(
    clock: VirtualClock, kind: str
) -> None:
    builder = make_builder(
        one_source(kind, lambda _k: payload(1, observed_at=clock.now() + 0.5)), clock
    )
    wanted = target(kind)
    snapshot = await builder.build([wanted])

    value = snapshot[wanted]
    assert value.observed_at == clock.now() + 0.5  # never clamped to now
    assert value.age_seconds == 0.0
    assert value.metadata["clock_skew_seconds"] == pytest.approx(0.5)
    lookup = await builder.cache.get(wanted, now=clock.now(), policy=FOREVER)
    assert lookup.value is not None
    assert lookup.value.observed_at == clock.now() + 0.5
    assert lookup.value.age_seconds == 0.0
    await builder.aclose()


async def test_a_payload_with_a_non_numeric_observed_at_does_not_wedge_the_circuit(
    clock: VirtualClock,
) -> None:
    calls = 0

    def produce(_k: ResourceKey, _c: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("down")
        return forged(1, "yesterday") if calls == 2 else 1

    policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(failure_threshold=1, recovery_timeout_seconds=1.0),
    )
    builder = make_builder([Single("evil", 1, produce)], clock, default_resilience=policy)
    await builder.build([A], strict=False)  # opens the circuit
    await asyncio.sleep(2.0)
    probe = await builder.build([A], strict=False)  # the half-open probe gets the forged stamp
    await asyncio.sleep(2.0)

    healed = await builder.build([A], strict=False)

    assert healed.value(A) == 1
    assert failure_types(probe, A) == ["SourceProtocolError"]
    await builder.aclose()


# -- malformed answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (lambda ks: [1, 2], "SourceProtocolError"),
        (lambda ks: None, "SourceProtocolError"),
        (lambda ks: {C: 1, **dict.fromkeys(ks, 1)}, "SourceProtocolError"),
        (lambda ks: {}, "SourceUnavailableError"),
    ],
    ids=["list", "none", "unrequested-key", "omitted-key"],
)
async def test_a_malformed_batch_answer_falls_through_and_is_reported(
    clock: VirtualClock, answer: Callable[[Any], Any], error_type: str
) -> None:
    evil = Batch("evil", 5, lambda ks, _c: answer(ks), supports=lambda k: k != C)
    builder = make_builder([evil, Single("backup", 1)], clock)

    snapshot = await builder.build([A, B])

    assert {snapshot[k].source for k in (A, B)} == {"backup"}
    assert await cached(builder, C) is None  # the unrequested key was not smuggled in
    no_backup = make_builder([Batch("evil", 5, lambda ks, _c: answer(ks))], clock)
    alone = await no_backup.build([A], strict=False)
    assert failure_types(alone, A) == [error_type]
    await builder.aclose()
    await no_backup.aclose()


def _raise(_k: ResourceKey) -> Any:
    raise RuntimeError("broken supports")


@pytest.mark.parametrize("supports", [_raise, lambda _k: "yes", lambda _k: None])
async def test_a_broken_supports_is_a_protocol_failure_and_the_chain_goes_on(
    clock: VirtualClock, supports: Callable[[ResourceKey], Any]
) -> None:
    builder = make_builder([Single("evil", 5, supports=supports), Single("backup", 1)], clock)

    snapshot = await builder.build([A])

    assert snapshot[A].source == "backup"
    lonely = make_builder([Single("evil", 5, supports=supports)], clock)
    # B-SRC-3: a supports() that raised is recorded with the error it raised.
    expected = "RuntimeError" if supports is _raise else "SourceProtocolError"
    assert failure_types(await lonely.build([A], strict=False), A) == [expected]
    await builder.aclose()
    await lonely.aclose()


@pytest.mark.parametrize(
    "deps",
    [lambda _k: 1 / 0, lambda _k: ["not a key"], lambda _k: None],
    ids=["raises", "str", "none"],
)
async def test_broken_dependencies_fall_through_to_the_next_source(
    clock: VirtualClock, deps: Callable[[ResourceKey], Any]
) -> None:
    evil = Derived("evil", 5, deps=deps, supports=lambda k: k == D)
    builder = make_builder([evil, Single("backup", 1)], clock)

    snapshot = await builder.build([D])

    assert snapshot[D].source == "backup"
    await builder.aclose()


# -- sources that never return -------------------------------------------------------------------


async def _forever(*_args: Any) -> Any:
    await asyncio.Event().wait()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_source_that_never_returns_is_ended_by_the_deadline(
    clock: VirtualClock, kind: str
) -> None:
    baseline = task_baseline()
    wanted = target(kind)
    hung = {
        "single": lambda: [Single("evil", 5, _forever)],
        "batch": lambda: [Batch("evil", 5, _forever)],
        "derived": lambda: [
            Derived("evil", 5, deps=lambda _k: (A,), handler=_forever, supports=lambda k: k == D),
            Single("plain", 1, supports=lambda k: k != D),
        ],
    }[kind]()
    builder = make_builder(hung, clock)
    start = clock.monotonic()

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([wanted], deadline_seconds=2.0)

    assert clock.monotonic() - start == pytest.approx(2.0)
    # B-TIME-1: a resolution error whose failure names the deadline.
    error = caught.value.errors[wanted]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures[-1].error_type == "SnapshotDeadlineExceededError"
    await settle()  # the flight's own timeout fires in the same instant, one turn later
    assert hung[0].cancelled == 1  # the call itself was cancelled, not left running
    assert await cached(builder, wanted) is None
    await builder.aclose()
    assert await leftovers(builder, baseline) == []


def _unavailable(error: Exception) -> bool:
    """A key's error (always a ResourceResolutionError, B-TIME-1) ending in unavailability."""
    return (
        isinstance(error, ResourceResolutionError)
        and error.failures[-1].error_type == "SourceUnavailableError"
    )


async def test_a_source_that_never_returns_is_ended_by_aclose(clock: VirtualClock) -> None:
    baseline = task_baseline()
    source = Single("evil", 5, _forever)
    builder = make_builder([source], clock)
    build = asyncio.create_task(builder.build([A, B]))
    await asyncio.sleep(3600.0)

    await builder.aclose()

    with pytest.raises(SnapshotBuildError) as caught:
        await build
    assert all(_unavailable(e) for e in caught.value.errors.values())
    assert source.cancelled == 2
    assert await leftovers(builder, baseline) == []


async def test_a_source_that_never_returns_is_cut_by_its_timeout_and_falls_through(
    clock: VirtualClock,
) -> None:
    builder = make_builder(
        [Single("evil", 5, _forever, timeout_seconds=1.0), Single("backup", 1)], clock
    )

    snapshot = await builder.build([A])

    assert snapshot[A].source == "backup"
    await builder.aclose()


# -- failures and their siblings -------------------------------------------------------------------


async def test_a_failed_key_does_not_wait_for_its_siblings_calls(clock: VirtualClock) -> None:
    async def uneven(k: ResourceKey, _c: Any) -> str:
        if k == A:
            raise RuntimeError("A is down here")
        await asyncio.sleep(10.0)
        return k.subject

    builder = make_builder([Single("evil", 5, uneven), Single("backup", 1)], clock)
    owner = asyncio.create_task(builder.build([A, B]))
    await asyncio.sleep(1.0)
    start = clock.monotonic()

    joined = await builder.build([A])

    assert joined[A].source == "backup"
    assert clock.monotonic() - start == pytest.approx(0.0)
    await owner
    await builder.aclose()


# -- BaseException from sources ------------------------------------------------------------------


def _raising(error: type[BaseException]) -> Callable[..., Any]:
    async def fetch(k: ResourceKey, _c: Any) -> str:
        if k == A:
            raise error()
        await asyncio.sleep(0.5)
        return k.subject

    return fetch


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("workers", [1, 4])
def test_keyboard_interrupt_and_system_exit_propagate_out_of_the_loop(
    error: type[BaseException], workers: int
) -> None:
    with VirtualTimeRunner() as runner:
        clock = VirtualClock(runner.get_loop())

        async def make() -> tuple[SnapshotBuilder, set[asyncio.Task[Any]]]:
            sources = [Single("evil", 5, _raising(error)), Single("backup", 1)]
            return make_builder(sources, clock, max_pending_tasks=workers), task_baseline()

        builder, baseline = runner.run(make())
        with pytest.raises(error):
            runner.run(builder.build([A, B, C]))
        # A task group that saw the interrupt in a worker raises it again from its own task
        # (asyncio's TaskGroup rule), so the loop may deliver it once more: let it.
        for _ in range(5):
            try:
                runner.run(settle())
                break
            except error:
                continue

        async def afterwards() -> list[str]:
            snapshot = await builder.build([B, C])  # still usable
            assert snapshot.complete
            await builder.aclose()
            return await leftovers(builder, baseline | task_baseline())

        assert runner.run(afterwards()) == []
    collect_finished_tasks()


def collect_finished_tasks() -> None:
    """Collect the tasks the interrupt left behind now, while nothing else is compiling.

    Their "exception was never retrieved" log formats a traceback, which on 3.11 parses source
    code; a cyclic collection that runs it in the middle of another compile (say, pytest's)
    fails with "AST constructor recursion depth mismatch".
    """
    gc.collect()


@pytest.mark.parametrize("workers", [1, 4])
async def test_another_base_exception_fails_that_resolution_only(
    clock: VirtualClock, workers: int
) -> None:
    baseline = task_baseline()
    sources = [Single("evil", 5, _raising(Weird)), Single("backup", 1)]
    builder = make_builder(sources, clock, max_pending_tasks=workers)

    snapshot = await builder.build([A, B, C], strict=False)

    assert set(snapshot.resources) | set(snapshot.errors) == {A, B, C}
    assert all(_unavailable(e) for e in snapshot.errors.values())
    assert (await builder.build([B, C])).complete
    await builder.aclose()
    assert await leftovers(builder, baseline) == []
    collect_finished_tasks()


async def test_a_base_exception_from_a_source_leaves_no_unretrieved_task_error(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    builder = make_builder([Single("evil", 5, _raising(Weird))], clock)
    await builder.build([A], strict=False)
    await builder.aclose()
    await settle()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        collect_finished_tasks()

    assert "never retrieved" not in caplog.text


def _spurious(kind: str) -> list[Any]:
    async def single(k: ResourceKey, _c: Any) -> str:
        if k == A:
            raise asyncio.CancelledError  # nobody cancelled this call
        await asyncio.sleep(0.5)
        return f"evil:{k.subject}"

    async def batch(ks: tuple[ResourceKey, ...], _c: Any) -> dict[ResourceKey, str]:
        if A in ks:
            raise asyncio.CancelledError
        await asyncio.sleep(0.5)
        return {k: f"evil:{k.subject}" for k in ks}

    async def derive(_k: ResourceKey, _s: Any, _c: Any) -> str:
        raise asyncio.CancelledError

    backup = Single("backup", 1)
    if kind == "single":
        return [Single("evil", 5, single), backup]
    if kind == "batch":
        return [Batch("evil", 5, batch, supports=lambda k: k != B, max_batch_size=1), backup]
    return [
        Derived("evil", 5, deps=lambda _k: (B,), handler=derive, supports=lambda k: k == A),
        backup,
    ]


SPURIOUS = [("single", 1), ("single", 4), ("batch", 4), ("derived", 4)]


@pytest.mark.parametrize(("kind", "workers"), SPURIOUS)
async def test_a_spurious_cancelled_error_does_not_cancel_the_caller_or_the_builder(
    clock: VirtualClock, kind: str, workers: int
) -> None:
    baseline = task_baseline()
    builder = make_builder(_spurious(kind), clock, max_pending_tasks=workers)

    snapshot = await builder.build([A, B, C], strict=False)  # no CancelledError here

    assert set(snapshot.resources) | set(snapshot.errors) == {A, B, C}
    assert all(isinstance(e, CoalestraError) for e in snapshot.errors.values())
    assert not builder.closed
    assert (await builder.build([B, C], strict=False)).resources
    await builder.aclose()
    assert await leftovers(builder, baseline) == []


@pytest.mark.parametrize(("kind", "workers"), SPURIOUS)
async def test_a_spurious_cancelled_error_is_a_failure_of_that_source_only(
    clock: VirtualClock, kind: str, workers: int
) -> None:
    builder = make_builder(_spurious(kind), clock, max_pending_tasks=workers)

    snapshot = await builder.build([A, B, C])

    assert snapshot[A].source == "backup"
    assert snapshot.complete
    await builder.aclose()
