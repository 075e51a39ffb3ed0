"""The priority chain (DESIGN "path of one build", step 4): order, fall-through, supports(),
ties, provenance, and batch sources (partial results, chunking, protocol violations)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import Batch, Single, key, keys, make_builder, payload

from coalestra.core import (
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuildError,
    SourceAuthorityPolicy,
    SourceFailure,
    SourcePayload,
)
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A, B, C, D = keys("A", "B", "C", "D")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


def boom(message: str = "boom") -> Any:
    def handler(*_args: Any) -> Any:
        raise RuntimeError(message)

    return handler


def only(*wanted: ResourceKey) -> Any:
    return lambda k: k in wanted


# --- priority order ---------------------------------------------------------------------------


async def test_highest_priority_source_serves_and_lower_is_never_called(
    clock: VirtualClock,
) -> None:
    low, high, mid = Single("low", 1), Single("high", 30), Single("mid", 20)
    builder = make_builder([low, high, mid], clock)

    snapshot = await builder.build([A])

    assert snapshot[A].source == "high"
    assert snapshot.value(A) == {"source": "high", "subject": "A"}
    assert high.calls == [A]
    assert mid.calls == low.calls == []
    assert snapshot.diagnostics.source_calls == 1
    assert dict(snapshot.diagnostics.source_calls_by_source) == {"high": 1}


async def test_a_failing_source_falls_through_to_the_next(clock: VirtualClock) -> None:
    high, mid, low = Single("high", 30, boom()), Single("mid", 20, boom()), Single("low", 10)
    builder = make_builder([high, mid, low], clock)

    snapshot = await builder.build([A, B])

    assert [snapshot[k].source for k in (A, B)] == ["low", "low"]
    assert high.calls == [A, B]
    assert mid.calls == [A, B]
    assert low.calls == [A, B]
    assert dict(snapshot.diagnostics.source_calls_by_source) == {"high": 2, "mid": 2, "low": 2}
    assert snapshot.diagnostics.source_calls == 6


async def test_only_the_failed_key_falls_through(clock: VirtualClock) -> None:
    high = Single("high", 30, lambda k, _c: boom()() if k == B else "high")
    low = Single("low", 10, lambda _k, _c: "low")
    builder = make_builder([high, low], clock)

    snapshot = await builder.build([A, B, C])

    assert {k: v.value for k, v in snapshot.items()} == {A: "high", B: "low", C: "high"}
    assert low.calls == [B]


async def test_a_source_that_does_not_support_the_key_is_skipped(clock: VirtualClock) -> None:
    high = Single("high", 30, supports=only(B))
    low = Single("low", 10)
    builder = make_builder([high, low], clock)

    snapshot = await builder.build([A, B])

    assert snapshot[A].source == "low"
    assert snapshot[B].source == "high"
    assert high.calls == [B]
    assert low.calls == [A]


async def test_no_supporting_source_is_a_resolution_error_without_failures(
    clock: VirtualClock,
) -> None:
    never = Single("never", 1, supports=lambda _k: False)
    builder = make_builder([never], clock)

    snapshot = await builder.build([A], strict=False)

    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures == ()
    assert never.calls == []


async def test_supports_that_raises_is_a_failure_of_that_source_for_that_key(
    clock: VirtualClock,
) -> None:
    def picky(k: ResourceKey) -> bool:
        if k == A:
            raise ValueError("cannot tell")
        return True

    high = Single("high", 30, supports=picky)
    low = Single("low", 10, supports=only(A))
    builder = make_builder([high, low], clock)

    snapshot = await builder.build([A, B])

    assert snapshot[A].source == "low"  # fell through past the broken supports()
    assert snapshot[B].source == "high"  # the source still serves the keys it can judge
    assert high.calls == [B]


async def test_supports_that_raises_is_recorded_as_a_source_failure(clock: VirtualClock) -> None:
    def broken(_k: ResourceKey) -> bool:
        raise ValueError("cannot tell")

    builder = make_builder([Single("broken", 5, supports=broken), Single("down", 1, boom())], clock)

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([A])

    error = caught.value.errors[A]
    assert isinstance(error, ResourceResolutionError)
    # B-SRC-3: the error supports() raised, with no attempt, then the chain goes on.
    assert [(f.source, f.error_type, f.message, f.attempts) for f in error.failures] == [
        ("broken", "ValueError", "cannot tell", 0),
        ("down", "RuntimeError", "boom", 1),
    ]


async def test_a_supports_that_raised_is_asked_again_next_build(clock: VirtualClock) -> None:
    answers = iter([RuntimeError("flaky"), True])

    def flaky(_k: ResourceKey) -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = Single("flaky", 5, supports=flaky)
    builder = make_builder([source], clock, default_policy=FreshnessPolicy(ttl_seconds=0.0))

    first = await builder.build([A], strict=False)
    second = await builder.build([A])

    assert A in first.errors
    assert source.calls == [A]
    assert second[A].source == "flaky"


async def test_supports_answers_are_cached_per_key_unless_the_source_opts_out(
    clock: VirtualClock,
) -> None:
    cached = Single("cached", 5, supports=only(B))
    asked = Single("asked", 1, cache_supports=False)
    builder = make_builder([cached, asked], clock, default_policy=FreshnessPolicy(0.0))

    first = await builder.build([A, B])
    await asyncio.sleep(0.01)  # with TTL 0 a value is fresh at age 0 only
    second = await builder.build([A, B])

    assert cached.supports_calls == 2  # once per key, then from the table
    assert asked.supports_calls == 4  # every build, every key
    assert (first.diagnostics.support_cache_misses, first.diagnostics.support_cache_hits) == (2, 0)
    assert (second.diagnostics.support_cache_misses, second.diagnostics.support_cache_hits) == (
        0,
        2,
    )
    builder.clear_source_support_cache()
    await asyncio.sleep(0.01)
    await builder.build([A])
    assert cached.supports_calls == 3


@pytest.mark.parametrize("first_registered", ["first", "second"])
async def test_equal_priorities_keep_registration_order(
    clock: VirtualClock, first_registered: str
) -> None:
    a, b = Single("first", 7), Single("second", 7)
    ordered = [a, b] if first_registered == "first" else [b, a]
    builder = make_builder([Single("low", 1), *ordered, Single("lowest", 0)], clock)

    snapshot = await builder.build([A])

    assert snapshot[A].source == first_registered


async def test_failures_are_listed_in_chain_order(clock: VirtualClock) -> None:
    sources = [Single(name, prio, boom(name)) for name, prio in [("b", 5), ("a", 9), ("c", 5)]]
    builder = make_builder(sources, clock)

    snapshot = await builder.build([A], strict=False)

    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures == (
        SourceFailure("a", "RuntimeError", "a", 1),
        SourceFailure("b", "RuntimeError", "b", 1),
        SourceFailure("c", "RuntimeError", "c", 1),
    )


# --- provenance -------------------------------------------------------------------------------


async def test_provenance_of_a_fetched_value(clock: VirtualClock) -> None:
    def observed_two_seconds_ago(_k: ResourceKey, _ctx: Any) -> SourcePayload[Any]:
        return payload({"p": 1}, observed_at=clock.now() - 2.0, venue="x")

    source = Single("rest", 5, observed_two_seconds_ago, delay=0.25)
    builder = make_builder(
        [source], clock, default_policy=LONG, authority_policy=SourceAuthorityPolicy({"rest": 7})
    )
    start = clock.now()

    value = (await builder.build([A]))[A]

    assert value.source == "rest"
    assert value.value == {"p": 1}
    assert value.fetched_at == pytest.approx(start + 0.25)
    assert value.observed_at == pytest.approx(start + 0.25 - 2.0)
    assert value.age_seconds == pytest.approx(2.0)
    assert value.stale is False
    assert value.from_cache is False
    assert value.attempts == 1
    assert value.latency_ms == pytest.approx(250.0)
    assert value.authority_rank == 7
    assert dict(value.metadata) == {"venue": "x"}
    assert value.version


async def test_provenance_of_a_cache_hit(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 5, delay=0.25)], clock, default_policy=LONG)
    first = (await builder.build([A]))[A]
    await asyncio.sleep(10.0)

    hit = (await builder.build([A]))[A]

    assert hit.from_cache is True
    assert hit.source == "rest"
    assert hit.observed_at == first.observed_at
    assert hit.fetched_at == clock.now()  # restamped when served (B-DIAG-1)
    assert hit.latency_ms == 0.0
    assert hit.age_seconds == pytest.approx(10.0)
    assert hit.version == first.version
    assert hit.stale is False


async def test_a_value_observed_now_by_default_and_bare_values_are_wrapped(
    clock: VirtualClock,
) -> None:
    builder = make_builder([Single("bare", 1, lambda _k, _c: 42, delay=1.5)], clock)
    start = clock.now()

    value = (await builder.build([A]))[A]

    assert value.value == 42
    assert value.observed_at == pytest.approx(start + 1.5)
    assert value.age_seconds == 0.0


async def test_attempts_and_latency_after_a_retry(clock: VirtualClock) -> None:
    outcomes = iter([ConnectionError("once"), "ok"])

    def flaky(_k: ResourceKey, _c: Any) -> Any:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    source = Single("flaky", 1, flaky, delay=0.1)
    retry = RetryPolicy(max_attempts=3, base_delay_seconds=0.5, jitter_ratio=0.0)
    builder = make_builder([source], clock, retry_policy=retry)
    start = clock.monotonic()

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "ok"
    assert snapshot[A].attempts == 2
    assert snapshot[A].latency_ms == pytest.approx(100.0)  # the successful attempt's latency
    assert snapshot.diagnostics.retries == 1
    assert snapshot.diagnostics.source_calls == 2
    assert clock.monotonic() - start == pytest.approx(0.1 + 0.5 + 0.1)
    assert len(source.calls) == 2


async def test_failure_attempts_are_recorded(clock: VirtualClock) -> None:
    def reset(_k: ResourceKey, _c: Any) -> Any:
        raise ConnectionError("boom")

    retry = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, jitter_ratio=0.0)
    builder = make_builder([Single("down", 1, reset)], clock, retry_policy=retry)

    snapshot = await builder.build([A], strict=False)

    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures == (SourceFailure("down", "ConnectionError", "boom", 3),)


# --- batch sources ----------------------------------------------------------------------------


async def test_batch_gets_every_unresolved_key_it_supports_at_its_level(
    clock: VirtualClock,
) -> None:
    top = Single("top", 30, supports=only(A))
    batch = Batch("batch", 20, supports=only(A, B, C))
    bottom = Single("bottom", 10)
    builder = make_builder([bottom, batch, top], clock)

    snapshot = await builder.build([A, B, C, D])

    assert batch.calls == [(B, C)]
    assert top.calls == [A]
    assert bottom.calls == [D]
    assert [snapshot[k].source for k in (A, B, C, D)] == ["top", "batch", "batch", "bottom"]
    assert snapshot.diagnostics.batch_calls == 1
    assert snapshot.diagnostics.batch_chunks == 1


async def test_batch_chunks_follow_max_batch_size(clock: VirtualClock) -> None:
    wanted = keys(*"ABCDEFG")
    batch = Batch("batch", 5, max_batch_size=3)
    builder = make_builder([batch], clock)

    snapshot = await builder.build(wanted)

    assert sorted(len(chunk) for chunk in batch.calls) == [1, 3, 3]
    assert sorted(k for chunk in batch.calls for k in chunk) == sorted(wanted)
    assert batch.calls[0] == tuple(wanted[:3])  # chunks keep input order
    assert snapshot.diagnostics.batch_chunks == 3
    assert snapshot.diagnostics.batch_calls == 3
    assert snapshot.diagnostics.source_calls_by_source["batch"] == 3
    assert len(snapshot) == 7


async def test_one_failing_chunk_only_sends_its_own_keys_down(clock: VirtualClock) -> None:
    wanted = keys(*"ABCDE")

    def fail_second_chunk(ks: tuple[ResourceKey, ...], _c: Any) -> Any:
        if wanted[2] in ks:
            raise RuntimeError("chunk down")
        return {k: "batch" for k in ks}

    batch = Batch("batch", 5, fail_second_chunk, max_batch_size=2)
    low = Single("low", 1, lambda _k, _c: "low")
    builder = make_builder([batch, low], clock)

    snapshot = await builder.build(wanted)

    assert [snapshot[k].value for k in wanted] == ["batch", "batch", "low", "low", "batch"]
    assert low.calls == wanted[2:4]


async def test_a_batch_that_omits_a_key_leaves_only_that_key_to_lower_sources(
    clock: VirtualClock,
) -> None:
    batch = Batch("batch", 5, lambda ks, _c: {k: "batch" for k in ks if k != B})
    low = Single("low", 1, lambda _k, _c: "low")
    builder = make_builder([batch, low], clock)

    snapshot = await builder.build([A, B, C])

    assert {k: v.value for k, v in snapshot.items()} == {A: "batch", B: "low", C: "batch"}
    assert low.calls == [B]


async def test_an_omitted_key_is_a_failure_of_the_batch_source(clock: VirtualClock) -> None:
    batch = Batch("batch", 5, lambda ks, _c: {k: 1 for k in ks if k != B})
    builder = make_builder([batch], clock)

    snapshot = await builder.build([A, B], strict=False)

    error = snapshot.errors[B]
    assert isinstance(error, ResourceResolutionError)
    assert [f.source for f in error.failures] == ["batch"]
    assert snapshot.value(A) == 1


@pytest.mark.parametrize(
    "bad_result",
    [
        pytest.param(lambda ks: {**{k: 1 for k in ks}, key("ZZZ"): 2}, id="unrequested-key"),
        pytest.param(lambda ks: [(k, 1) for k in ks], id="list"),
        pytest.param(lambda ks: None, id="none"),
    ],
)
async def test_a_batch_protocol_violation_is_recorded_and_keys_fall_through(
    clock: VirtualClock, bad_result: Any
) -> None:
    batch = Batch("batch", 5, lambda ks, _c: bad_result(ks))
    low = Single("low", 1, lambda _k, _c: "low")
    builder = make_builder([batch, low], clock)

    snapshot = await builder.build([A, B])

    assert {k: v.value for k, v in snapshot.items()} == {A: "low", B: "low"}
    assert low.calls == [A, B]
    assert key("ZZZ") not in snapshot

    only_batch = make_builder([Batch("batch", 5, lambda ks, _c: bad_result(ks))], clock)
    failed = await only_batch.build([A, B], strict=False)
    for k in (A, B):
        error = failed.errors[k]
        assert isinstance(error, ResourceResolutionError)
        assert [(f.source, f.error_type) for f in error.failures] == [
            ("batch", "SourceProtocolError")
        ]


async def test_batch_values_may_be_payloads_with_their_own_observed_at(
    clock: VirtualClock,
) -> None:
    now = clock.now()
    batch = Batch(
        "batch", 5, lambda ks, _c: {k: payload(k.subject, observed_at=now - 3) for k in ks}
    )
    builder = make_builder([batch], clock, default_policy=LONG)

    snapshot = await builder.build([A, B])

    assert snapshot[A].observed_at == pytest.approx(now - 3)
    assert snapshot[B].value == "B"


async def test_mixed_levels_single_then_batch_then_single(clock: VirtualClock) -> None:
    top = Single("top", 30, lambda k, _c: boom()() if k in (A, C) else "top")
    batch = Batch("batch", 20, lambda ks, _c: {k: "batch" for k in ks if k != C})
    bottom = Single("bottom", 10, lambda _k, _c: "bottom")
    builder = make_builder([top, batch, bottom], clock)

    snapshot = await builder.build([A, B, C])

    assert {k: v.value for k, v in snapshot.items()} == {A: "batch", B: "top", C: "bottom"}
    assert batch.calls == [(A, C)]
    assert bottom.calls == [C]


async def test_a_key_never_waits_for_a_source_it_does_not_use(clock: VirtualClock) -> None:
    slow = Single("slow", 30, delay=10.0, supports=only(B))
    fast = Single("fast", 10, delay=1.0)
    builder = make_builder([slow, fast], clock)
    start = clock.monotonic()

    owner = asyncio.create_task(builder.build([A, B]))
    await asyncio.sleep(0.5)
    joined = await builder.build([A])
    joined_at = clock.monotonic() - start
    snapshot = await owner

    assert joined_at == pytest.approx(1.0)
    assert joined.value(A) == {"source": "fast", "subject": "A"}
    assert snapshot[B].source == "slow"
    assert clock.monotonic() - start == pytest.approx(10.0)


async def test_keys_falling_to_a_batch_at_the_same_instant_share_one_call(
    clock: VirtualClock,
) -> None:
    first = Single("first", 30, boom(), supports=only(A))
    second = Single("second", 20, boom(), supports=only(B))
    batch = Batch("batch", 10)
    builder = make_builder([first, second, batch], clock)

    snapshot = await builder.build([A, B, C])

    assert snapshot.complete
    assert [sorted(call) for call in batch.calls] == [sorted([A, B, C])]


async def test_a_payload_that_cannot_be_copied_is_a_failure_and_falls_through(
    clock: VirtualClock,
) -> None:
    class Uncopyable:
        def __deepcopy__(self, _memo: Any) -> Any:
            raise TypeError("no copies")

    odd = Single("odd", 5, lambda _k, _c: {"thing": Uncopyable()})
    plain = Single("plain", 1, lambda _k, _c: "plain")
    builder = make_builder([odd, plain], clock)

    snapshot = await builder.build([A])
    alone = await make_builder([Single("odd", 5, lambda _k, _c: [Uncopyable()])], clock).build(
        [A], strict=False
    )

    assert snapshot.value(A) == "plain"
    error = alone.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [("odd", "PayloadIsolationError")]


async def test_a_source_keeping_its_payload_cannot_change_the_snapshot_or_cache(
    clock: VirtualClock,
) -> None:
    kept: dict[str, list[int]] = {"items": [1]}
    builder = make_builder([Single("rest", 1, lambda _k, _c: kept)], clock, default_policy=LONG)

    snapshot = await builder.build([A])
    kept["items"].append(2)
    cached = await builder.build([A])

    assert snapshot.value(A) == {"items": [1]}
    assert cached.value(A) == {"items": [1]}
    assert cached[A].from_cache
