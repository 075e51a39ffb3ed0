"""RetryPolicy: validation, the backoff schedule (exact with injected randomness), jitter bounds,
and which errors are worth retrying."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalestra.core import (
    CircuitOpenError,
    CoalestraError,
    DependencyCycleError,
    DependencyResolutionError,
    PayloadIsolationError,
    ResourceKey,
    SnapshotDeadlineExceededError,
    SourceProtocolError,
    SourceQueueTimeoutError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from coalestra.resilience import RetryPolicy


def no_jitter() -> float:
    return 0.5


def test_defaults_match_the_contract() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay_seconds) == (2, 0.05)
    assert (policy.max_delay_seconds, policy.jitter_ratio) == (1.0, 0.1)


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]


def test_schedule_doubles_from_base_and_caps_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_seconds=0.1, max_delay_seconds=1.0)
    delays = [policy.delay_for_attempt(n, random=no_jitter) for n in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    policy = RetryPolicy(base_delay_seconds=0.5, max_delay_seconds=2.0, jitter_ratio=0.0)
    assert policy.delay_for_attempt(10_000) == 2.0


def test_jitter_extremes_are_plus_and_minus_the_ratio() -> None:
    policy = RetryPolicy(base_delay_seconds=1.0, max_delay_seconds=10.0, jitter_ratio=0.25)
    assert policy.delay_for_attempt(2, random=lambda: 0.0) == pytest.approx(2.0 * 0.75)
    assert policy.delay_for_attempt(2, random=lambda: 0.999999) == pytest.approx(2.5, rel=1e-5)


def test_zero_jitter_does_not_draw_randomness() -> None:
    def forbidden() -> float:
        raise AssertionError("random must not be drawn without jitter")

    policy = RetryPolicy(base_delay_seconds=0.2, jitter_ratio=0.0)
    assert policy.delay_for_attempt(1, random=forbidden) == 0.2


def test_default_randomness_stays_within_the_jitter_band() -> None:
    policy = RetryPolicy(base_delay_seconds=1.0, max_delay_seconds=1.0, jitter_ratio=0.5)
    delays = {policy.delay_for_attempt(1) for _ in range(200)}
    assert all(0.5 <= delay <= 1.5 for delay in delays)
    assert len(delays) > 1  # the default really is random


@given(
    base=st.floats(0.0, 5.0),
    extra=st.floats(0.0, 5.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(1, 200),
    sample=st.floats(0.0, 1.0, exclude_max=True),
)
def test_every_delay_is_within_the_jittered_cap(
    base: float, extra: float, jitter: float, attempt: int, sample: float
) -> None:
    policy = RetryPolicy(
        max_attempts=3, base_delay_seconds=base, max_delay_seconds=base + extra, jitter_ratio=jitter
    )
    delay = policy.delay_for_attempt(attempt, random=lambda: sample)
    capped = min(policy.max_delay_seconds, base * 2.0 ** (attempt - 1))
    assert math.isfinite(delay)
    assert capped * (1 - jitter) - 1e-9 <= delay <= capped * (1 + jitter) + 1e-9


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts"),
        ({"max_attempts": True}, TypeError, "max_attempts"),
        ({"base_delay_seconds": -0.1}, ValueError, "base_delay_seconds"),
        ({"base_delay_seconds": math.nan}, ValueError, "base_delay_seconds"),
        ({"base_delay_seconds": "1"}, TypeError, "base_delay_seconds"),
        ({"max_delay_seconds": math.inf}, ValueError, "max_delay_seconds"),
        ({"base_delay_seconds": 2.0, "max_delay_seconds": 1.0}, ValueError, "max_delay_seconds"),
        ({"jitter_ratio": -0.01}, ValueError, "jitter_ratio"),
        ({"jitter_ratio": 1.01}, ValueError, "jitter_ratio"),
        ({"jitter_ratio": None}, TypeError, "jitter_ratio"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_boundary_values_are_accepted_and_stored_as_floats() -> None:
    policy = RetryPolicy(max_attempts=1, base_delay_seconds=0, max_delay_seconds=0, jitter_ratio=1)
    assert policy.delay_for_attempt(1, random=lambda: 0.9) == 0.0
    assert isinstance(policy.base_delay_seconds, float)
    assert isinstance(policy.jitter_ratio, float)


def test_bad_attempt_numbers_are_refused() -> None:
    with pytest.raises(TypeError, match="attempt"):
        RetryPolicy().delay_for_attempt(1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_below_one_give_the_base_delay(attempt: int) -> None:
    policy = RetryPolicy(base_delay_seconds=0.25, jitter_ratio=0.0)
    assert policy.delay_for_attempt(attempt) == 0.25


def test_bad_random_sources_are_refused() -> None:
    with pytest.raises(TypeError, match="random"):
        RetryPolicy().delay_for_attempt(1, random=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="random"):
        RetryPolicy().delay_for_attempt(1, random=lambda: 1.5)


KEY = ResourceKey("market", "price", "BTC")


@pytest.mark.parametrize(
    "error",
    [
        SourceProtocolError("bad payload"),
        PayloadIsolationError(context="cache", value_type="socket"),
        CircuitOpenError("open"),
        SnapshotDeadlineExceededError("deadline"),
        SourceQueueTimeoutError("queue"),
        DependencyCycleError((KEY, KEY)),
        ValueError("bad"),
        RuntimeError("boom"),
        CoalestraError("generic"),
        DependencyResolutionError(KEY, "derived", {}),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        SystemExit(1),
        GeneratorExit(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_a_retry_cannot_fix_are_not_retryable(error: BaseException) -> None:
    assert RetryPolicy().is_retryable(error) is False


@pytest.mark.parametrize(
    "error",
    [
        SourceTimeoutError("slow"),
        SourceUnavailableError("down"),
        TimeoutError(),
        ConnectionResetError(),
        OSError("io"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_transient_errors_are_retryable(error: BaseException) -> None:
    assert RetryPolicy().is_retryable(error) is True


def test_subclasses_of_permanent_errors_are_not_retryable() -> None:
    class StrictProtocolError(SourceProtocolError):
        pass

    assert RetryPolicy().is_retryable(StrictProtocolError("nope")) is False


def test_is_retryable_refuses_non_exceptions() -> None:
    with pytest.raises(TypeError, match="error"):
        RetryPolicy().is_retryable("boom")  # type: ignore[arg-type]
