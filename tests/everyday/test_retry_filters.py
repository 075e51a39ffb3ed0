"""Issue 16 item 5: retry filters (``retry_on`` / ``give_up_on``) and fetchers whose signature
cannot take the adapter's arguments, rejected when the source is made."""

from __future__ import annotations

from typing import Any

import pytest

from coalestra import (
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CircuitOpenError,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
    SourceResiliencePolicy,
    SourceUnavailableError,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTC")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


class RateLimited(Exception):
    """A user error type a caller wants retried."""


class Failing:
    """Raises ``errors`` in turn, then returns 1; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, key: ResourceKey, _ctx: object) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return 1


async def attempts_for(fetcher: Failing, retry: RetryPolicy, clock: VirtualClock) -> int:
    source = CallableSource(
        name="rest",
        priority=1,
        supports=lambda _key: True,
        fetcher=fetcher,
        resilience_policy=SourceResiliencePolicy(retry=retry),
    )
    async with SnapshotBuilder([source], default_policy=POLICY, clock=clock) as builder:
        await builder.build([KEY], strict=False)
    return fetcher.calls


def test_defaults_are_unchanged() -> None:
    policy = RetryPolicy()
    assert policy.retry_on is None
    assert policy.give_up_on is None
    assert policy.is_retryable(ConnectionError())
    assert policy.is_retryable(SourceUnavailableError())
    assert not policy.is_retryable(ValueError())
    assert RetryPolicy(3, 0.1, 1.0, 0.0) == RetryPolicy(
        max_attempts=3, base_delay_seconds=0.1, max_delay_seconds=1.0, jitter_ratio=0.0
    )


def test_retry_on_types_replaces_the_transient_set() -> None:
    policy = RetryPolicy(retry_on=RateLimited)
    assert policy.retry_on == (RateLimited,)
    assert policy.is_retryable(RateLimited())
    assert not policy.is_retryable(ConnectionError())
    both = RetryPolicy(retry_on=(RateLimited, ConnectionError))
    assert both.is_retryable(RateLimited())
    assert both.is_retryable(ConnectionError())


def test_retry_on_and_give_up_on_accept_predicates() -> None:
    policy = RetryPolicy(
        retry_on=lambda error: "429" in str(error), give_up_on=lambda error: "auth" in str(error)
    )
    assert policy.is_retryable(RuntimeError("HTTP 429"))
    assert not policy.is_retryable(RuntimeError("HTTP 500"))
    assert not policy.is_retryable(RuntimeError("HTTP 429 auth expired"))


def test_give_up_on_wins_over_the_default_transient_set() -> None:
    policy = RetryPolicy(give_up_on=ConnectionRefusedError)
    assert not policy.is_retryable(ConnectionRefusedError())
    assert policy.is_retryable(ConnectionResetError())


@pytest.mark.parametrize(
    "error",
    [CircuitOpenError("open"), SnapshotDeadlineExceededError("late"), SourceQueueTimeoutError("q")],
)
def test_filters_never_retry_what_another_attempt_cannot_fix(error: Exception) -> None:
    assert not RetryPolicy(retry_on=Exception).is_retryable(error)
    assert not RetryPolicy(retry_on=lambda _error: True).is_retryable(error)


def test_a_raising_predicate_retries_nothing() -> None:
    def broken(_error: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    assert not RetryPolicy(retry_on=broken).is_retryable(ConnectionError())
    assert RetryPolicy(give_up_on=broken).is_retryable(ConnectionError())


@pytest.mark.parametrize("bad", [(), (ValueError, "x"), 3, "ValueError", int])
def test_a_malformed_filter_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="retry_on must be"):
        RetryPolicy(retry_on=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="give_up_on must be"):
        RetryPolicy(give_up_on=bad)  # type: ignore[arg-type]


async def test_a_build_retries_a_user_error_named_in_retry_on(clock: VirtualClock) -> None:
    retried = RetryPolicy(max_attempts=3, jitter_ratio=0.0, retry_on=RateLimited)
    assert await attempts_for(Failing(RateLimited(), RateLimited()), retried, clock) == 3
    assert await attempts_for(Failing(RateLimited()), RetryPolicy(max_attempts=3), clock) == 1


async def test_a_build_gives_up_at_once_on_give_up_on(clock: VirtualClock) -> None:
    policy = RetryPolicy(max_attempts=3, give_up_on=ConnectionRefusedError)
    assert await attempts_for(Failing(ConnectionRefusedError()), policy, clock) == 1
    assert await attempts_for(Failing(ConnectionResetError()), policy, clock) == 2


# -- fetcher signatures ------------------------------------------------------------------------


def yes(_key: ResourceKey) -> bool:
    return True


def fetch_price(symbol: str) -> float:
    return 1.0


def test_a_single_fetcher_that_cannot_take_key_and_context_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"fetcher must accept \(key, context\); fetch_price"):
        CallableSource(name="s", priority=1, supports=yes, fetcher=fetch_price)


def test_a_batch_fetcher_is_checked_against_keys_and_context() -> None:
    with pytest.raises(TypeError, match=r"fetcher must accept \(keys, context\)"):
        CallableBatchSource(name="s", priority=1, supports=yes, fetcher=fetch_price)


def test_a_deriver_is_checked_against_key_dependencies_and_context() -> None:
    with pytest.raises(TypeError, match=r"deriver must accept \(key, dependencies, context\)"):
        CallableDerivedSource(
            name="s",
            priority=1,
            supports=yes,
            dependencies=lambda key: [],
            deriver=lambda key, context: 1,
        )


def test_a_fetcher_needing_a_third_argument_is_rejected() -> None:
    async def fetch(key: ResourceKey, context: object, session: object) -> int:
        return 1

    with pytest.raises(TypeError, match="missing a required argument: 'session'"):
        CallableSource(name="s", priority=1, supports=yes, fetcher=fetch)


def test_fetchers_that_can_take_the_arguments_are_accepted() -> None:
    class Bound:
        async def fetch(self, key: ResourceKey, context: object) -> int:
            return 1

    async def variadic(*args: object) -> int:
        return 1

    async def extra_default(key: ResourceKey, context: object, retries: int = 3) -> int:
        return 1

    for fetcher in (Bound().fetch, variadic, extra_default, print):
        CallableSource(name="s", priority=1, supports=yes, fetcher=fetcher)
    CallableBatchSource(name="b", priority=1, supports=yes, fetcher=lambda keys, ctx: {})
    CallableDerivedSource(
        name="d",
        priority=1,
        supports=yes,
        dependencies=lambda key: [],
        deriver=lambda key, deps, ctx: 1,
    )
