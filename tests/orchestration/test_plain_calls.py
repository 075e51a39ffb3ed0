"""Plain source calls (a single-key call with nothing to bound, made right in the group's
worker): within one level, a key whose call is no longer plain -- its circuit got a record, no
slot is free -- goes through the gate's attempt loop, and a plain call that fails goes on
there (retries, a CancelledError the source raised on its own), as every call did before."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.orchestration.conftest import (
    Gauge,
    Single,
    assert_quiet,
    keys,
    make_builder,
)

from coalestra.core import ResourceKey, ResourceResolutionError
from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitScope,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

A, B, C = keys("A", "B", "C")


def failures(error: Exception) -> list[tuple[str, str]]:
    assert isinstance(error, ResourceResolutionError), repr(error)
    return [(failure.source, failure.error_type) for failure in error.failures]


async def test_a_circuit_opened_by_a_plain_call_refuses_the_rest_of_its_level(
    clock: VirtualClock,
) -> None:
    def handler(key: ResourceKey, _ctx: Any) -> str:
        if key == A:
            raise ConnectionError("down")
        return key.subject

    policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(
            scope=CircuitScope.SOURCE, failure_threshold=1, recovery_timeout_seconds=5.0
        ),
    )
    source = Single("rest", 5, handler, resilience_policy=policy)
    builder = make_builder([source], clock)

    snapshot = await builder.build([A, B, C], strict=False)

    assert source.calls == [A]  # B and C were refused by the circuit A's failure opened
    assert failures(snapshot.errors[A]) == [("rest", "ConnectionError")]
    assert failures(snapshot.errors[B]) == [("rest", "CircuitOpenError")]
    assert failures(snapshot.errors[C]) == [("rest", "CircuitOpenError")]
    await builder.aclose()


async def test_a_cancelled_error_a_plain_call_raises_itself_fails_only_its_key(
    clock: VirtualClock,
) -> None:
    def handler(key: ResourceKey, _ctx: Any) -> str:
        if key == A:
            raise asyncio.CancelledError
        return key.subject

    source = Single("rest", 5, handler)
    fallback = Single("fallback", 1, lambda key, _ctx: f"fallback {key.subject}")
    builder = make_builder([source, fallback], clock)

    snapshot = await builder.build([A, B])
    only = make_builder([Single("rest", 5, handler)], clock)
    failed = await only.build([A, B], strict=False)

    assert snapshot.value(A) == "fallback A"
    assert snapshot.value(B) == "B"
    assert failures(failed.errors[A]) == [("rest", "SourceUnavailableError")]
    assert failed.errors[A].failures[0].message == (
        "rest raised CancelledError without being cancelled"
    )
    assert failed.value(B) == "B"
    await builder.aclose()
    await only.aclose()


async def test_a_plain_call_that_fails_is_retried_by_the_gate(clock: VirtualClock) -> None:
    attempts: list[ResourceKey] = []

    def handler(key: ResourceKey, _ctx: Any) -> str:
        attempts.append(key)
        if key == A and attempts.count(A) == 1:
            raise ConnectionError("blip")
        return key.subject

    retry = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, jitter_ratio=0.0)
    source = Single("rest", 5, handler)
    builder = make_builder([source], clock, retry_policy=retry)

    snapshot = await builder.build([A, B])

    assert snapshot.value(A) == "A"
    assert snapshot[A].attempts == 2
    assert snapshot[B].attempts == 1
    assert snapshot.diagnostics.retries == 1
    assert snapshot.diagnostics.source_calls == 3
    await builder.aclose()


async def test_a_call_finding_no_free_slot_waits_in_the_gate(clock: VirtualClock) -> None:
    gauge = Gauge()
    source = Single("rest", 5, lambda key, _ctx: key.subject, delay=0.5, gauge=gauge)
    builder = make_builder([source], clock, max_concurrency=2)

    snapshot = await builder.build([A, B, C])

    assert [snapshot.value(k) for k in (A, B, C)] == ["A", "B", "C"]
    assert source.peak == 2  # C waited for a slot
    assert snapshot.diagnostics.source_calls == 3
    await assert_quiet(builder)
    await builder.aclose()
