"""Contract facts B-RES-1 ... B-RES-5: what is retried, the backoff, circuit identities and
messages, abandoned probes, and what a build records on a circuit."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from coalestra import (
    CallableSource,
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitIdentity,
    CircuitOpenError,
    CircuitScope,
    CircuitState,
    FreshnessPolicy,
    ObservationPolicy,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotDeadlineExceededError,
    SourcePayload,
    SourceProtocolError,
    SourceQueueTimeoutError,
    SourceResiliencePolicy,
    SourceTimeoutError,
    SourceUnavailableError,
)
from coalestra.testing import VirtualClock

BTC = ResourceKey("market", "price", "BTC")
ETH = ResourceKey("market", "price", "ETH")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


class Counting:
    """A fetcher that raises ``errors`` in turn (then returns ``value``), counting calls."""

    def __init__(self, *errors: BaseException, value: Any = 1, observed_at: float | None = None):
        self.errors = list(errors)
        self.calls = 0
        self.value = value
        self.observed_at = observed_at

    async def __call__(self, key: ResourceKey, _ctx: object) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.observed_at is not None:
            return SourcePayload(self.value, observed_at=self.observed_at)
        return self.value


def source(fetcher: Any, name: str = "rest", **options: Any) -> CallableSource:
    return CallableSource(
        name=name, priority=10, supports=lambda _key: True, fetcher=fetcher, **options
    )


def builder(*sources: CallableSource, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    return SnapshotBuilder(sources, default_policy=POLICY, clock=clock, **options)


# -- B-RES-1: what is retried ----------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        SourceProtocolError("bad"),
        KeyError("k"),
        RuntimeError("boom"),
        CircuitOpenError("open"),
        SnapshotDeadlineExceededError("late"),
        SourceQueueTimeoutError("queue"),
    ],
)
async def test_b_res_1_other_errors_fail_after_one_attempt(
    clock: VirtualClock, error: Exception
) -> None:
    fetcher = Counting(error)
    async with builder(source(fetcher), clock=clock) as b:
        snapshot = await b.build([BTC], strict=False)
    assert fetcher.calls == 1
    failure = snapshot.errors[BTC].failures[0]  # type: ignore[attr-defined]
    assert failure.attempts == 1
    assert snapshot.diagnostics.retries == 0


@pytest.mark.parametrize(
    "error",
    [
        SourceUnavailableError("down"),
        SourceTimeoutError("slow"),
        TimeoutError("slow"),
        ConnectionError("reset"),
        OSError("io"),
    ],
)
async def test_b_res_1_transient_errors_are_retried(clock: VirtualClock, error: Exception) -> None:
    fetcher = Counting(error, value=7)
    async with builder(source(fetcher), clock=clock) as b:
        snapshot = await b.build([BTC])
    assert fetcher.calls == 2
    assert snapshot[BTC].value == 7
    assert snapshot[BTC].attempts == 2
    assert snapshot.diagnostics.retries == 1


def test_b_res_1_default_policy_classifies_errors() -> None:
    policy = RetryPolicy()
    assert not policy.is_retryable(ValueError("x"))
    assert not policy.is_retryable(SourceProtocolError("x"))
    assert not policy.is_retryable(CircuitOpenError("x"))
    assert policy.is_retryable(ConnectionResetError("x"))
    assert policy.is_retryable(SourceTimeoutError("x"))


# -- B-RES-2: backoff ------------------------------------------------------------------------


def test_b_res_2_delay_formula_without_jitter() -> None:
    policy = RetryPolicy(base_delay_seconds=0.1, max_delay_seconds=1.0, jitter_ratio=0.0)
    assert policy.delay_for_attempt(0) == 0.1
    assert policy.delay_for_attempt(1) == 0.1
    assert policy.delay_for_attempt(2) == 0.2
    assert policy.delay_for_attempt(3) == pytest.approx(0.4)
    assert policy.delay_for_attempt(5) == 1.0
    assert policy.delay_for_attempt(10_000) == 1.0


def test_b_res_2_jitter_stays_within_ratio_and_non_negative() -> None:
    policy = RetryPolicy(base_delay_seconds=0.2, max_delay_seconds=1.0, jitter_ratio=0.5)
    for attempt in range(6):
        nominal = min(1.0, 0.2 * 2 ** max(0, attempt - 1))
        for _ in range(50):
            delay = policy.delay_for_attempt(attempt)
            assert delay >= 0.0
            assert nominal * 0.5 - 1e-12 <= delay <= nominal * 1.5 + 1e-12


async def test_b_res_2_no_backoff_past_the_deadline(clock: VirtualClock) -> None:
    fetcher = Counting(SourceUnavailableError("down"), value=1)
    retry = RetryPolicy(max_attempts=3, base_delay_seconds=1.0, max_delay_seconds=1.0)
    started = clock.monotonic()
    async with builder(source(fetcher), clock=clock, retry_policy=retry) as b:
        snapshot = await b.build([BTC], strict=False, deadline_seconds=0.5)
    assert fetcher.calls == 1
    assert clock.monotonic() - started < 0.5
    assert "down" in str(snapshot.errors[BTC])
    assert snapshot.diagnostics.retries == 0


# -- B-RES-3: abandoned and skipped probes ---------------------------------------------------


async def _half_open_with_probe(breaker: CircuitBreaker, clock: VirtualClock) -> None:
    await breaker.record_failure("rest")
    assert await breaker.state_for("rest") is CircuitState.OPEN
    await asyncio.sleep(2.0)
    assert await breaker.state_for("rest") is CircuitState.HALF_OPEN
    await breaker.before_call("rest")


async def test_b_res_3_abandoned_probe_reopens(clock: VirtualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout_seconds=1.0, clock=clock)
    await _half_open_with_probe(breaker, clock)
    await breaker.record_abandoned("rest")
    assert await breaker.state_for("rest") is CircuitState.OPEN
    (snapshot,) = (await breaker.snapshot()).values()
    assert snapshot.opened_at == clock.monotonic()
    assert not snapshot.half_open_probe_active
    with pytest.raises(CircuitOpenError):
        await breaker.before_call("rest")


async def test_b_res_3_skipped_probe_only_releases(clock: VirtualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout_seconds=1.0, clock=clock)
    await _half_open_with_probe(breaker, clock)
    await breaker.record_skipped("rest")
    assert await breaker.state_for("rest") is CircuitState.HALF_OPEN
    await breaker.before_call("rest")  # the probe slot is free again


async def test_b_res_3_abandoned_on_closed_circuit_changes_nothing(clock: VirtualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    await breaker.record_failure("rest")
    await breaker.record_abandoned("rest")
    assert await breaker.state_for("rest") is CircuitState.CLOSED


def _one_shot(threshold: int = 1) -> SourceResiliencePolicy:
    return SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(failure_threshold=threshold, recovery_timeout_seconds=1.0),
    )


async def test_b_res_3_cancelled_build_abandons_the_probe(clock: VirtualClock) -> None:
    started = asyncio.Event()

    async def fetch(key: ResourceKey, _ctx: object) -> int:
        started.set()
        await asyncio.sleep(100.0)
        return 1

    b = builder(source(fetch, resilience_policy=_one_shot()), clock=clock)
    await b.circuit_breaker.record_failure("rest", policy=_one_shot().circuit)
    await asyncio.sleep(1.0)
    task = asyncio.ensure_future(b.build([BTC]))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await b.aclose()
    assert await b.circuit_breaker.state_for("rest") is CircuitState.OPEN


async def test_b_res_3_deadline_skips_the_probe(clock: VirtualClock) -> None:
    async def fetch(key: ResourceKey, _ctx: object) -> int:
        await asyncio.sleep(100.0)
        return 1

    policy = _one_shot()
    async with builder(source(fetch, resilience_policy=policy), clock=clock) as b:
        await b.circuit_breaker.record_failure("rest", policy=policy.circuit)
        await asyncio.sleep(1.0)
        snapshot = await b.build([BTC], strict=False, deadline_seconds=0.5)
        # B-TIME-1: the key's error is a ResourceResolutionError naming the deadline.
        assert snapshot.errors[BTC].failures[0].error_type == "SnapshotDeadlineExceededError"
        await asyncio.sleep(0.01)  # the flight may settle just after its waiter gave up
        assert await b.circuit_breaker.state_for("rest") is CircuitState.HALF_OPEN
        circuit = (await b.circuit_breaker.snapshot())[CircuitIdentity("rest", "source")]
        assert not circuit.half_open_probe_active


# -- B-RES-4: identities and messages ---------------------------------------------------------


def test_b_res_4_discriminators_by_scope() -> None:
    breaker = CircuitBreaker()
    key = ResourceKey("market", "price", "BTC", {"venue": "spot"})
    empty = ResourceKey("market", "price")
    ident = breaker.identity_for
    assert ident("rest", key=key, scope=CircuitScope.SOURCE).discriminator == ""
    assert ident("rest", key=key, scope=CircuitScope.NAMESPACE).discriminator == "market"
    assert ident("rest", key=key, scope=CircuitScope.SUBJECT).discriminator == "BTC"
    assert ident("rest", key=empty, scope=CircuitScope.SUBJECT).discriminator == "market:price"
    assert ident("rest", key=key, scope=CircuitScope.RESOURCE).discriminator == str(key)


def test_b_res_4_identity_strings() -> None:
    assert str(CircuitIdentity("rest", CircuitScope.SOURCE)) == "rest[source]"
    assert str(CircuitIdentity("rest", CircuitScope.SUBJECT, "BTC")) == "rest[subject]:BTC"
    assert str(CircuitIdentity("rest", CircuitScope.NAMESPACE, "m")) == "rest[namespace]:m"
    assert str(CircuitIdentity("rest", CircuitScope.RESOURCE, "")) == "rest[resource]"


@pytest.mark.parametrize("scope", ["namespace", "subject", "resource"])
async def test_b_res_4_keyed_scope_without_key(scope: str) -> None:
    breaker = CircuitBreaker()
    message = f"resource key is required for circuit scope {scope}"
    with pytest.raises(ValueError, match="resource key is required") as caught:
        breaker.identity_for("rest", scope=CircuitScope(scope))
    assert str(caught.value) == message
    policy = CircuitBreakerPolicy(scope=CircuitScope(scope))
    with pytest.raises(ValueError, match="resource key is required") as caught:
        await breaker.before_call("rest", policy=policy)
    assert str(caught.value) == message


async def test_b_res_4_circuit_open_messages(clock: VirtualClock) -> None:
    policy = CircuitBreakerPolicy(
        scope=CircuitScope.SUBJECT, failure_threshold=1, recovery_timeout_seconds=1.0
    )
    breaker = CircuitBreaker(clock=clock, default_policy=policy)
    await breaker.record_failure("rest", key=BTC)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.before_call("rest", key=BTC)
    assert str(caught.value) == "circuit is open for rest[subject]:BTC"
    await asyncio.sleep(1.0)
    await breaker.before_call("rest", key=BTC)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.before_call("rest", key=BTC)
    assert str(caught.value) == "half-open probe already active for rest[subject]:BTC"


# -- B-RES-5: what a build records -------------------------------------------------------------


async def _state(b: SnapshotBuilder) -> CircuitState:
    return await b.circuit_breaker.state_for("rest")


async def test_b_res_5_exception_records_failure(clock: VirtualClock) -> None:
    fetcher = Counting(ValueError("bad"))
    async with builder(source(fetcher, resilience_policy=_one_shot()), clock=clock) as b:
        await b.build([BTC], strict=False)
        assert await _state(b) is CircuitState.OPEN


async def test_b_res_5_stale_payload_records_failure(clock: VirtualClock) -> None:
    fetcher = Counting(value=1, observed_at=clock.now() - 30.0)
    async with builder(source(fetcher, resilience_policy=_one_shot()), clock=clock) as b:
        await b.build([BTC], strict=False)
        assert await _state(b) is CircuitState.OPEN


async def test_b_res_5_payload_at_ttl_records_success(clock: VirtualClock) -> None:
    fetcher = Counting(value=1, observed_at=clock.now() - 5.0)
    policy = _one_shot(threshold=2)
    async with builder(source(fetcher, resilience_policy=policy), clock=clock) as b:
        await b.circuit_breaker.record_failure("rest", policy=policy.circuit)
        await b.build([BTC])
        assert await b.circuit_breaker.snapshot() == {}  # the failure count was reset


async def test_b_res_5_rejected_timestamp_records_failure(clock: VirtualClock) -> None:
    fetcher = Counting(value=1, observed_at=clock.now() + 3600.0)
    async with builder(
        source(fetcher, resilience_policy=_one_shot()),
        clock=clock,
        observation_policy=ObservationPolicy(),
    ) as b:
        snapshot = await b.build([BTC], strict=False)
        assert BTC in snapshot.errors
        assert await _state(b) is CircuitState.OPEN


async def test_b_res_5_dependency_failure_records_nothing(clock: VirtualClock) -> None:
    from coalestra import CallableDerivedSource

    derived = CallableDerivedSource(
        name="rest",
        priority=5,
        supports=lambda key: key == ETH,
        dependencies=lambda _key: [BTC],
        deriver=lambda _key, deps, _ctx: deps.value(BTC) * 2,
        resilience_policy=_one_shot(),
    )
    failing = CallableSource(
        name="feed",
        priority=10,
        supports=lambda key: key == BTC,
        fetcher=Counting(ValueError("down"), ValueError("down")),
        resilience_policy=_one_shot(threshold=5),
    )
    async with SnapshotBuilder([failing, derived], default_policy=POLICY, clock=clock) as b:
        snapshot = await b.build([ETH], strict=False)
        assert ETH in snapshot.errors
        assert await b.circuit_breaker.state_for("rest") is CircuitState.CLOSED
        assert all(ident.source != "rest" for ident in await b.circuit_breaker.snapshot())


def test_b_res_5_breaker_and_retry_policy_are_public(clock: VirtualClock) -> None:
    b = SnapshotBuilder([source(Counting())], clock=clock)
    assert isinstance(b.circuit_breaker, CircuitBreaker)
    assert b.retry_policy == RetryPolicy()
    retry = RetryPolicy(max_attempts=4)
    breaker = CircuitBreaker()
    b = SnapshotBuilder([source(Counting())], retry_policy=retry, circuit_breaker=breaker)
    assert b.retry_policy is retry
    assert b.circuit_breaker is breaker


def test_b_res_2_infinite_attempt_cap_is_finite() -> None:
    policy = RetryPolicy(base_delay_seconds=1.0, max_delay_seconds=1.0, jitter_ratio=0.0)
    assert math.isfinite(policy.delay_for_attempt(5000))
