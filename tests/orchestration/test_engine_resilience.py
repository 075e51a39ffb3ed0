"""The circuit part of the gate (DESIGN step 5): circuits open per scope, refuse calls without
touching the source, recover through a probe, and are never blamed for the build's own deadline
or cancellation; which resilience policy a source gets; non-retryable errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import (
    NO_RETRY,
    Batch,
    Single,
    keys,
    make_builder,
    payload,
    settle,
)

from coalestra.core import (
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SourceProtocolError,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitScope,
    CircuitState,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

A, B, C = keys("A", "B", "C")
NEVER_FRESH = FreshnessPolicy(ttl_seconds=0.0)


def circuit(
    scope: CircuitScope = CircuitScope.SOURCE, threshold: int = 2
) -> SourceResiliencePolicy:
    return SourceResiliencePolicy(
        retry=NO_RETRY,
        circuit=CircuitBreakerPolicy(
            scope=scope, failure_threshold=threshold, recovery_timeout_seconds=5.0
        ),
    )


class Switch:
    """A handler failing for the keys in ``bad`` (mutable), answering the subject otherwise."""

    def __init__(self, *bad: ResourceKey) -> None:
        self.bad = set(bad)

    def __call__(self, key: ResourceKey, _ctx: Any) -> str:
        if key in self.bad:
            raise ConnectionError(f"cannot serve {key.subject}")
        return key.subject


def failure_types(error: Exception) -> list[tuple[str, str]]:
    assert isinstance(error, ResourceResolutionError), repr(error)
    return [(f.source, f.error_type) for f in error.failures]


async def test_an_open_circuit_refuses_calls_and_keys_fall_through(clock: VirtualClock) -> None:
    handler = Switch(A, B)
    source = Single("rest", 5, handler, resilience_policy=circuit())
    fallback = Single("fallback", 1, lambda _k, _c: "fallback")
    builder = make_builder([source, fallback], clock, default_policy=NEVER_FRESH)

    await builder.build([A])
    await builder.build([B])  # second consecutive failure: open
    handler.bad.clear()
    snapshot = await builder.build([C])

    assert snapshot.value(C) == "fallback"
    assert source.calls == [A, B]
    circuits = (await builder.health_snapshot()).circuits
    assert [snap.state for snap in circuits.values()] == [CircuitState.OPEN]

    only = make_builder([Single("rest", 5, Switch(A, B), resilience_policy=circuit())], clock)
    await only.build([A], strict=False)
    await only.build([B], strict=False)
    refused = await only.build([C], strict=False)
    assert failure_types(refused.errors[C]) == [("rest", "CircuitOpenError")]


async def test_a_circuit_recovers_through_a_probe_after_its_timeout(clock: VirtualClock) -> None:
    handler = Switch(A, B)
    source = Single("rest", 5, handler, resilience_policy=circuit())
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)
    await builder.build([A], strict=False)
    await builder.build([B], strict=False)
    handler.bad.clear()

    await asyncio.sleep(4.9)
    still_open = await builder.build([C], strict=False)
    await asyncio.sleep(0.2)
    probed = await builder.build([C])

    assert C in still_open.errors
    assert probed.value(C) == "C"
    assert source.calls == [A, B, C]
    circuits = (await builder.health_snapshot()).circuits
    assert all(snap.state is CircuitState.CLOSED for snap in circuits.values())
    assert (await builder.build([A])).value(A) == "A"


async def test_subject_scope_isolates_one_subject(clock: VirtualClock) -> None:
    source = Single("rest", 5, Switch(A), resilience_policy=circuit(CircuitScope.SUBJECT))
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)

    for _ in range(3):
        await builder.build([A, B], strict=False)
        await asyncio.sleep(0.01)  # with TTL 0 a value is fresh at age 0 only

    assert source.calls.count(A) == 2  # refused after the circuit opened
    assert source.calls.count(B) == 3
    snapshot = await builder.build([A, B], strict=False)
    assert snapshot.value(B) == "B"
    assert failure_types(snapshot.errors[A]) == [("rest", "CircuitOpenError")]


async def test_a_batch_call_skips_only_the_keys_behind_open_circuits(clock: VirtualClock) -> None:
    def partial(ks: tuple[ResourceKey, ...], _c: Any) -> Any:
        if A in ks:
            raise RuntimeError("A poisons the batch")
        return {k: k.subject for k in ks}

    batch = Batch("batch", 5, partial, resilience_policy=circuit(CircuitScope.SUBJECT))
    fallback = Single("fallback", 1, lambda _k, _c: "fallback")
    builder = make_builder([batch, fallback], clock, default_policy=NEVER_FRESH)
    await builder.build([A])
    await builder.build([A])  # A's circuit is now open

    snapshot = await builder.build([A, B, C])

    assert batch.calls[-1] == (B, C)
    assert {k: v.value for k, v in snapshot.items()} == {A: "fallback", B: "B", C: "C"}


async def test_stale_payloads_count_as_circuit_failures(clock: VirtualClock) -> None:
    old = Single(
        "old",
        5,
        lambda _k, _c: payload("old", observed_at=clock.now() - 100.0),
        resilience_policy=circuit(),
    )
    fresh = Single("fresh", 1, lambda _k, _c: "fresh")
    builder = make_builder(
        [old, fresh],
        clock,
        default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0),
    )

    for k in (A, B):
        assert (await builder.build([k])).value(k) == "fresh"
    await builder.build([C])

    assert old.calls == [A, B]


async def test_the_builds_own_deadline_is_not_blamed_on_the_source(clock: VirtualClock) -> None:
    source = Single("slow", 5, delay=10.0, resilience_policy=circuit(threshold=1))
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)

    for _ in range(3):
        await builder.build([A], deadline_seconds=1.0, strict=False)
        await settle()  # let the abandoned call wind down (see the single-flight tests)

    assert len(source.calls) == 3  # never refused
    circuits = (await builder.health_snapshot()).circuits
    assert all(snap.state is CircuitState.CLOSED for snap in circuits.values())
    assert all(snap.failures == 0 for snap in circuits.values())


async def test_a_cancelled_build_is_not_blamed_on_the_source(clock: VirtualClock) -> None:
    source = Single("slow", 5, delay=10.0, resilience_policy=circuit(threshold=1))
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)

    for _ in range(2):
        build = asyncio.create_task(builder.build([A]))
        await asyncio.sleep(1.0)
        build.cancel()
        await asyncio.gather(build, return_exceptions=True)

    assert len(source.calls) == 2
    assert source.cancelled == 2
    circuits = (await builder.health_snapshot()).circuits
    assert all(snap.state is CircuitState.CLOSED for snap in circuits.values())


async def test_a_source_timeout_is_blamed_on_the_source(clock: VirtualClock) -> None:
    source = Single("slow", 5, delay=10.0, timeout_seconds=1.0, resilience_policy=circuit())
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)

    for _ in range(3):
        await builder.build([A], strict=False)

    assert len(source.calls) == 2


async def test_central_policies_beat_a_sources_own_and_its_own_beats_the_default(
    clock: VirtualClock,
) -> None:
    three = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=3, base_delay_seconds=0.01, jitter_ratio=0.0)
    )
    declared = Single("declared", 5, Switch(A), resilience_policy=three)
    overridden = Single("overridden", 4, Switch(A), resilience_policy=three)
    default = Single("default", 3, Switch(A))
    builder = SnapshotBuilder(
        [declared, overridden, default],
        clock=clock,
        source_resilience={"overridden": SourceResiliencePolicy(retry=NO_RETRY)},
        default_resilience=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.01, jitter_ratio=0.0)
        ),
    )

    snapshot = await builder.build([A], strict=False)

    assert (len(declared.calls), len(overridden.calls), len(default.calls)) == (3, 1, 2)
    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert [f.attempts for f in error.failures] == [3, 1, 2]


async def test_protocol_errors_are_not_retried(clock: VirtualClock) -> None:
    retry = RetryPolicy(max_attempts=4, base_delay_seconds=0.01, jitter_ratio=0.0)
    liar = Single("liar", 5, lambda _k, _c: payload("x", observed_at=clock.now() + 100.0))
    broken = Batch("broken", 4, lambda ks, _c: [1, 2])
    builder = make_builder([liar, broken], clock, retry_policy=retry)

    snapshot = await builder.build([A], strict=False)

    assert len(broken.calls) == 1
    assert failure_types(snapshot.errors[A])[1] == ("broken", SourceProtocolError.__name__)
    # a future timestamp is judged after the call: the call itself succeeded, so no retry
    assert len(liar.calls) == 1


@pytest.mark.parametrize("scope", list(CircuitScope))
async def test_every_scope_opens_and_refuses(clock: VirtualClock, scope: CircuitScope) -> None:
    source = Single("rest", 5, Switch(A), resilience_policy=circuit(scope, threshold=1))
    builder = make_builder([source], clock, default_policy=NEVER_FRESH)

    await builder.build([A], strict=False)
    snapshot = await builder.build([A], strict=False)

    assert source.calls == [A]
    assert failure_types(snapshot.errors[A]) == [("rest", "CircuitOpenError")]
