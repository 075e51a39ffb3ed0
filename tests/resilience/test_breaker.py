"""CircuitBreaker: opening, fail-fast, half-open probing, scopes, reset, snapshots, memory."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import pytest

from coalestra.core import CircuitOpenError, Clock, ResourceKey, SourceUnavailableError
from coalestra.resilience import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitIdentity,
    CircuitScope,
    CircuitSnapshot,
    CircuitState,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

T = TypeVar("T")

SRC = "market-stream"
BTC = ResourceKey("market", "price", "BTC")
ETH = ResourceKey("market", "price", "ETH")
BTC_DEPTH = ResourceKey("market", "depth", "BTC")
BTC_1M = ResourceKey("market", "price", "BTC", {"interval": "1m"})
NEWS_BTC = ResourceKey("news", "headline", "BTC")


class AdvancingClock(Clock, Protocol):
    def advance(self, seconds: float) -> None: ...


def breaker(clock: Clock, **policy: Any) -> CircuitBreaker:
    """A breaker whose default policy is ``CircuitBreakerPolicy(**policy)``."""
    return CircuitBreaker(clock=clock, default_policy=CircuitBreakerPolicy(**policy))


async def fail_times(b: CircuitBreaker, times: int, *, key: ResourceKey | None = None) -> None:
    for _ in range(times):
        await b.before_call(SRC, key=key)
        await b.record_failure(SRC, key=key)


async def entry(b: CircuitBreaker, identity: CircuitIdentity) -> CircuitSnapshot | None:
    return (await b.snapshot()).get(identity)


SOURCE_ID = CircuitIdentity(SRC, CircuitScope.SOURCE)


# -- closed -> open ---------------------------------------------------------------------------


async def test_threshold_consecutive_failures_open_the_circuit(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=3)
    await fail_times(b, 2)
    assert await b.state_for(SRC) is CircuitState.CLOSED
    manual_clock.advance(1.5)
    await fail_times(b, 1)
    assert await b.state_for(SRC) is CircuitState.OPEN
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.OPEN, 3, 101.5, False)
    assert b.open_circuit_count() == 1


async def test_a_success_resets_the_consecutive_count(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=3)
    await fail_times(b, 2)
    await b.before_call(SRC)
    await b.record_success(SRC)
    await fail_times(b, 2)
    assert await b.state_for(SRC) is CircuitState.CLOSED
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.CLOSED, 2, 0.0, False)


async def test_open_circuit_fails_fast_naming_source_and_scope(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, scope=CircuitScope.SUBJECT, failure_threshold=1)
    await fail_times(b, 1, key=BTC)
    with pytest.raises(CircuitOpenError) as caught:
        await b.before_call(SRC, key=BTC)
    message = str(caught.value)
    assert SRC in message
    assert "subject" in message
    assert "BTC" in message
    assert isinstance(caught.value, SourceUnavailableError)


async def test_open_circuit_rejects_until_the_recovery_timeout(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=10.0)
    await fail_times(b, 1)
    manual_clock.advance(9.999)
    assert await b.state_for(SRC) is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)
    manual_clock.advance(0.001)
    assert await b.state_for(SRC) is CircuitState.HALF_OPEN
    assert await b.before_call(SRC) == SOURCE_ID


# -- half-open probing ------------------------------------------------------------------------


async def open_and_probe(b: CircuitBreaker, clock: AdvancingClock) -> None:
    """Open ``b``'s SOURCE circuit (threshold 1), wait out recovery, and admit one probe."""
    await fail_times(b, 1)
    clock.advance(b.default_policy.recovery_timeout_seconds)
    await b.before_call(SRC)


async def test_half_open_admits_one_probe_at_a_time(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=5.0)
    await open_and_probe(b, manual_clock)
    snap = await entry(b, SOURCE_ID)
    assert snap == CircuitSnapshot(CircuitState.HALF_OPEN, 1, 100.0, True)
    with pytest.raises(CircuitOpenError, match="probe"):
        await b.before_call(SRC)
    manual_clock.advance(1000.0)  # time alone never frees the probe slot
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)


async def test_probe_success_closes_and_forgets_the_circuit(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=5.0)
    await open_and_probe(b, manual_clock)
    await b.record_success(SRC)
    assert await b.state_for(SRC) is CircuitState.CLOSED
    assert await b.snapshot() == {}
    assert b.open_circuit_count() == 0
    await b.before_call(SRC)  # admitted again, as often as wanted
    await b.before_call(SRC)


async def test_probe_failure_reopens_with_a_new_opened_at(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=2, recovery_timeout_seconds=5.0)
    await fail_times(b, 2)
    manual_clock.advance(5.0)
    await b.before_call(SRC)
    await b.record_failure(SRC)
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.OPEN, 3, 105.0, False)
    assert b.open_circuit_count() == 1
    manual_clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)
    manual_clock.advance(0.1)
    await b.before_call(SRC)


async def test_skipped_probe_frees_the_slot_and_counts_nothing(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=5.0)
    await open_and_probe(b, manual_clock)
    await b.record_skipped(SRC)
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.HALF_OPEN, 1, 100.0, False)
    await b.before_call(SRC)  # the next caller becomes the probe
    assert (await entry(b, SOURCE_ID)) == CircuitSnapshot(CircuitState.HALF_OPEN, 1, 100.0, True)


async def test_abandoned_probe_reopens_the_circuit_now(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=5.0)
    await open_and_probe(b, manual_clock)
    now = manual_clock.monotonic()
    await b.record_abandoned(SRC)
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.OPEN, 1, now, False)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)


async def test_abandoning_a_closed_call_changes_nothing(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=3)
    await fail_times(b, 2)
    await b.before_call(SRC)
    await b.record_abandoned(SRC)
    await b.record_skipped(SRC)
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.CLOSED, 2, 0.0, False)


async def test_zero_recovery_timeout_goes_straight_to_half_open(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=0.0)
    await fail_times(b, 1)
    assert await b.state_for(SRC) is CircuitState.HALF_OPEN
    await b.before_call(SRC)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)


# -- stragglers: outcomes of calls admitted before the circuit opened ------------------------


async def test_late_outcomes_never_move_an_open_circuit(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=2, recovery_timeout_seconds=5.0)
    for _ in range(4):  # four calls in flight at once
        await b.before_call(SRC)
    await b.record_failure(SRC)
    await b.record_failure(SRC)  # opens at 100.0
    manual_clock.advance(2.0)
    await b.record_failure(SRC)  # late: counted, but does not push recovery back
    await b.record_success(SRC)  # late: does not close
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.OPEN, 3, 100.0, False)
    manual_clock.advance(3.0)
    await b.before_call(SRC)  # recovery still measured from 100.0


# -- disabled policy and policy selection ----------------------------------------------------


async def test_disabled_policy_never_opens_and_keeps_no_state(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=1, enabled=False)
    await fail_times(b, 50)
    assert await b.state_for(SRC) is CircuitState.CLOSED
    assert await b.snapshot() == {}
    assert b.tracked_circuit_count() == 0


async def test_disabled_call_policy_passes_an_open_circuit(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    await fail_times(b, 1)
    off = CircuitBreakerPolicy(failure_threshold=1, enabled=False)
    assert await b.before_call(SRC, policy=off) == SOURCE_ID


async def test_constructor_numbers_make_the_policy_without_default_policy(
    manual_clock: AdvancingClock,
) -> None:
    b = CircuitBreaker(failure_threshold=1, recovery_timeout_seconds=2.0, clock=manual_clock)
    assert b.default_policy == CircuitBreakerPolicy(
        failure_threshold=1, recovery_timeout_seconds=2.0
    )
    await fail_times(b, 1)
    manual_clock.advance(2.0)
    assert await b.state_for(SRC) is CircuitState.HALF_OPEN


async def test_default_policy_wins_over_constructor_numbers_and_call_policy_over_both(
    manual_clock: AdvancingClock,
) -> None:
    b = CircuitBreaker(
        failure_threshold=1,
        clock=manual_clock,
        default_policy=CircuitBreakerPolicy(failure_threshold=5),
    )
    await fail_times(b, 4)
    assert await b.state_for(SRC) is CircuitState.CLOSED
    strict = CircuitBreakerPolicy(failure_threshold=1)
    await b.before_call("other", policy=strict)
    await b.record_failure("other", policy=strict)
    assert await b.state_for("other", policy=strict) is CircuitState.OPEN


async def test_recovery_timeout_is_fixed_when_the_circuit_opens(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=1, recovery_timeout_seconds=10.0)
    await fail_times(b, 1)
    manual_clock.advance(1.0)
    quick = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout_seconds=0.5)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC, policy=quick)


# -- scopes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "discriminator"),
    [
        (CircuitScope.SOURCE, ""),
        (CircuitScope.NAMESPACE, "market"),
        (CircuitScope.SUBJECT, "BTC"),
        (CircuitScope.RESOURCE, "market:price:BTC?interval=1m"),
    ],
)
def test_identity_for_each_scope(scope: CircuitScope, discriminator: str) -> None:
    b = CircuitBreaker()
    assert b.identity_for(SRC, key=BTC_1M, scope=scope) == CircuitIdentity(
        SRC, scope, discriminator
    )
    assert b.identity_for(SRC, key=BTC_1M, scope=scope.value) == CircuitIdentity(  # type: ignore[arg-type]
        SRC, scope, discriminator
    )


def test_identity_for_defaults_to_the_default_policy_scope() -> None:
    b = CircuitBreaker(default_policy=CircuitBreakerPolicy(scope=CircuitScope.SUBJECT))
    assert b.identity_for(SRC, key=ETH) == CircuitIdentity(SRC, CircuitScope.SUBJECT, "ETH")
    assert CircuitBreaker().identity_for(SRC) == SOURCE_ID


@pytest.mark.parametrize("scope", [CircuitScope.NAMESPACE, CircuitScope.SUBJECT, "resource"])
def test_keyed_scopes_require_a_key(scope: CircuitScope) -> None:
    with pytest.raises(ValueError, match="key is required"):
        CircuitBreaker().identity_for(SRC, scope=scope)


@pytest.mark.parametrize(
    ("scope", "isolated", "shared"),
    [
        (CircuitScope.SOURCE, [], [ETH, NEWS_BTC, BTC_1M]),
        (CircuitScope.NAMESPACE, [NEWS_BTC], [ETH, BTC_DEPTH]),
        (CircuitScope.SUBJECT, [ETH], [BTC_DEPTH, BTC_1M, NEWS_BTC]),
        (CircuitScope.RESOURCE, [ETH, BTC_DEPTH, BTC_1M], []),
    ],
)
async def test_scopes_isolate_failures(
    manual_clock: AdvancingClock,
    scope: CircuitScope,
    isolated: list[ResourceKey],
    shared: list[ResourceKey],
) -> None:
    b = breaker(manual_clock, scope=scope, failure_threshold=2)
    await fail_times(b, 2, key=BTC)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC, key=BTC)
    for key in isolated:
        await b.before_call(SRC, key=key)
        assert await b.state_for(SRC, key=key) is CircuitState.CLOSED
    for key in shared:
        with pytest.raises(CircuitOpenError):
            await b.before_call(SRC, key=key)


async def test_sources_never_share_circuits(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    await fail_times(b, 1)
    assert await b.before_call("other-source") == CircuitIdentity("other-source", "source")  # type: ignore[arg-type]


# -- the product page example ---------------------------------------------------------------


async def test_product_page_stream_policy(manual_clock: AdvancingClock) -> None:
    stream_policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(
            scope=CircuitScope.SUBJECT,
            failure_threshold=2,
            recovery_timeout_seconds=5.0,
        ),
    )
    assert stream_policy.retry.max_attempts == 1  # no retries: one attempt per call
    b = CircuitBreaker(clock=manual_clock)  # the policy comes with each call
    circuit = stream_policy.circuit
    for _ in range(2):
        await b.before_call(SRC, key=BTC, policy=circuit)
        await b.record_failure(SRC, key=BTC, policy=circuit)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC, key=BTC, policy=circuit)
    assert await b.before_call(SRC, key=ETH, policy=circuit) == CircuitIdentity(
        SRC, CircuitScope.SUBJECT, "ETH"
    )
    assert await b.snapshot() == {
        CircuitIdentity(SRC, CircuitScope.SUBJECT, "BTC"): CircuitSnapshot(
            CircuitState.OPEN, 2, 100.0, False
        )
    }
    manual_clock.advance(5.0)
    await b.before_call(SRC, key=BTC, policy=circuit)
    await b.record_success(SRC, key=BTC, policy=circuit)
    assert await b.state_for(SRC, key=BTC, policy=circuit) is CircuitState.CLOSED


# -- reset ----------------------------------------------------------------------------------


async def open_three(b: CircuitBreaker) -> None:
    """Open SUBJECT circuits for BTC and ETH at SRC, and the SOURCE circuit of 'other'."""
    subject = CircuitBreakerPolicy(scope=CircuitScope.SUBJECT, failure_threshold=1)
    for key in (BTC, ETH):
        await b.record_failure(SRC, key=key, policy=subject)
    await b.record_failure("other")
    assert b.open_circuit_count() == 3


async def test_reset_one_identity(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    await open_three(b)
    subject = CircuitBreakerPolicy(scope=CircuitScope.SUBJECT)
    await b.reset(SRC, key=BTC, policy=subject)
    assert await b.state_for(SRC, key=BTC, policy=subject) is CircuitState.CLOSED
    assert await b.state_for(SRC, key=ETH, policy=subject) is CircuitState.OPEN
    assert b.open_circuit_count() == 2


async def test_reset_source_drops_all_its_circuits(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    await open_three(b)
    await b.reset(SRC)
    assert set(await b.snapshot()) == {CircuitIdentity("other", CircuitScope.SOURCE)}
    assert b.open_circuit_count() == 1


async def test_reset_everything(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    await open_three(b)
    await b.reset()
    assert await b.snapshot() == {}
    assert b.open_circuit_count() == 0
    await b.before_call("other")


async def test_reset_refuses_a_key_without_a_source() -> None:
    with pytest.raises(ValueError, match="source"):
        await CircuitBreaker().reset(key=BTC)


async def test_reset_frees_a_probe_and_a_late_probe_outcome_is_harmless(
    manual_clock: AdvancingClock,
) -> None:
    b = breaker(manual_clock, failure_threshold=2, recovery_timeout_seconds=1.0)
    await fail_times(b, 2)
    manual_clock.advance(1.0)
    await b.before_call(SRC)
    await b.reset(SRC)
    await b.record_failure(SRC)  # the old probe reports into a fresh, closed circuit
    assert await entry(b, SOURCE_ID) == CircuitSnapshot(CircuitState.CLOSED, 1, 0.0, False)


# -- snapshots, counters and memory ---------------------------------------------------------


async def test_snapshot_is_a_read_only_point_in_time_copy(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=2)
    await fail_times(b, 1)
    snap = await b.snapshot()
    with pytest.raises(TypeError):
        snap[SOURCE_ID] = CircuitSnapshot(CircuitState.OPEN, 9, 0.0, False)  # type: ignore[index]
    await fail_times(b, 1)
    assert snap == {SOURCE_ID: CircuitSnapshot(CircuitState.CLOSED, 1, 0.0, False)}
    assert (await b.snapshot())[SOURCE_ID].state is CircuitState.OPEN


async def test_open_circuit_count_covers_open_and_half_open(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, scope=CircuitScope.RESOURCE, failure_threshold=1)
    await fail_times(b, 1, key=BTC)
    manual_clock.advance(10.0)
    await fail_times(b, 1, key=ETH)
    states = {snap.state for snap in (await b.snapshot()).values()}
    assert states == {CircuitState.OPEN, CircuitState.HALF_OPEN}
    assert b.open_circuit_count() == 2


async def test_memory_is_bounded_by_failing_circuits(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, scope=CircuitScope.RESOURCE, failure_threshold=2)
    keys = [ResourceKey("market", "price", f"S{i}") for i in range(5_000)]
    for index, key in enumerate(keys):
        await b.before_call(SRC, key=key)
        if index % 1000 == 0:
            await b.record_failure(SRC, key=key)
        else:
            await b.record_success(SRC, key=key)
    assert b.tracked_circuit_count() == 5
    for key in keys[::1000]:
        await b.record_success(SRC, key=key)
    assert b.tracked_circuit_count() == 0
    assert await b.snapshot() == {}


# -- the synchronous fast path --------------------------------------------------------------


def test_sync_twins_drive_the_same_state(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, scope=CircuitScope.SUBJECT, failure_threshold=1)
    identity = b.enter(SRC, BTC)
    assert identity == CircuitIdentity(SRC, CircuitScope.SUBJECT, "BTC")
    b.fail(identity)
    with pytest.raises(CircuitOpenError):
        b.enter(SRC, BTC)
    manual_clock.advance(10.0)
    probe = b.enter(SRC, BTC)
    b.skip(probe)
    probe = b.enter(SRC, BTC)
    b.abandon(probe)  # an abandoned probe re-opens the circuit
    with pytest.raises(CircuitOpenError):
        b.enter(SRC, BTC)
    manual_clock.advance(10.0)
    probe = b.enter(SRC, BTC)
    b.succeed(probe)
    assert b.open_circuit_count() == 0
    assert b.tracked_circuit_count() == 0


def run_without_suspending(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion, failing if it ever awaits something."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the coroutine suspended")


def test_async_methods_never_suspend(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    assert run_without_suspending(b.before_call(SRC)) == SOURCE_ID
    run_without_suspending(b.record_failure(SRC))
    run_without_suspending(b.record_success(SRC))
    run_without_suspending(b.record_abandoned(SRC))
    run_without_suspending(b.record_skipped(SRC))
    assert run_without_suspending(b.state_for(SRC)) is CircuitState.OPEN
    assert len(run_without_suspending(b.snapshot())) == 1
    run_without_suspending(b.reset())


async def test_recovery_on_virtual_time(clock: VirtualClock) -> None:
    b = breaker(clock, failure_threshold=1, recovery_timeout_seconds=30.0)
    await fail_times(b, 1)
    await asyncio.sleep(29.5)
    with pytest.raises(CircuitOpenError):
        await b.before_call(SRC)
    await asyncio.sleep(0.5)
    await b.before_call(SRC)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"recovery_timeout_seconds": -1}, ValueError, "recovery_timeout_seconds"),
        ({"clock": object()}, TypeError, "clock"),
        ({"default_policy": RetryPolicy()}, TypeError, "default_policy"),
    ],
)
def test_constructor_validation(
    kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


async def test_method_validation() -> None:
    b = CircuitBreaker()
    with pytest.raises(ValueError, match="source"):
        await b.before_call("")
    with pytest.raises(TypeError, match="source"):
        await b.record_failure(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        await b.before_call(SRC, key="market:price:BTC")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy"):
        await b.record_success(SRC, policy=RetryPolicy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="identity"):
        b.fail((SRC, "source", ""))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope"):
        b.identity_for(SRC, key=BTC, scope="galaxy")  # type: ignore[arg-type]
    assert await b.snapshot() == {}


async def test_many_source_names_keep_separate_circuits(manual_clock: AdvancingClock) -> None:
    b = breaker(manual_clock, failure_threshold=1)
    names = [f"source-{i}" for i in range(1_500)]  # more than the identity cache holds
    for name in names:
        identity = await b.before_call(name)
        assert identity == CircuitIdentity(name, CircuitScope.SOURCE)
        await b.record_failure(name)
    assert b.open_circuit_count() == len(names)
    with pytest.raises(CircuitOpenError):
        await b.before_call(names[-1])
