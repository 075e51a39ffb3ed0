"""0.6 section 8: the 0.6.4 input-validation phrasings, and unbounded freshness windows.

Every check 0.6.4 lists rejects its bad inputs with the 0.6.4 key phrase ("must be finite",
"cannot be NaN", "must be a boolean", ...), and the exact messages of ``behaviour.md`` still hold
(they win where they state one). ``FreshnessPolicy(ttl_seconds=inf, max_stale_seconds=inf)`` and
a finite TTL with ``max_stale_seconds=inf`` are accepted and never expire.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from coalestra import (
    AsyncMemoryCache,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CircuitBreakerPolicy,
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotValue,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("v", "item", "1")
NOT_FINITE = [math.inf, -math.inf, math.nan]
NOT_NUMBERS = ["1", None, True, [1.0]]
A_LONG_TIME = 1e9  # seconds: about 30 years
LATER = 1e5  # seconds of virtual time a builder lives through: a day and more


def _matches(phrase: str) -> str:
    """A regex matching a message that starts with ``phrase`` (what callers match)."""
    return "^" + phrase.replace("(", r"\(").replace(")", r"\)")


# -- FreshnessPolicy -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["ttl_seconds", "max_stale_seconds"])
def test_a_nan_window_cannot_be_nan(field: str) -> None:
    windows: dict[str, Any] = {"ttl_seconds": 1.0, "max_stale_seconds": 2.0, field: math.nan}
    with pytest.raises(ValueError, match=f"^{field} cannot be NaN$"):
        FreshnessPolicy(**windows)


@pytest.mark.parametrize("field", ["ttl_seconds", "max_stale_seconds", "refresh_ahead_seconds"])
@pytest.mark.parametrize("bad", NOT_NUMBERS)
def test_a_window_that_is_not_a_number_is_a_type_error(field: str, bad: object) -> None:
    windows: dict[str, Any] = {"ttl_seconds": 1.0, "max_stale_seconds": 2.0, field: bad}
    with pytest.raises(TypeError, match=_matches(f"{field} must be a number")):
        FreshnessPolicy(**windows)


@pytest.mark.parametrize("bad", NOT_FINITE)
@pytest.mark.parametrize("ttl", [10.0, math.inf])
def test_refresh_ahead_seconds_must_be_finite(bad: float, ttl: float) -> None:
    with pytest.raises(ValueError, match=_matches("refresh_ahead_seconds must be finite")):
        FreshnessPolicy(
            ttl_seconds=ttl,
            max_stale_seconds=math.inf,
            refresh_mode=RefreshMode.REFRESH_AHEAD,
            refresh_ahead_seconds=bad,
        )


def test_the_behaviour_md_freshness_messages_are_unchanged() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ttl_seconds": -1.0}, "ttl_seconds cannot be negative"),
        (
            {"ttl_seconds": 5.0, "max_stale_seconds": 4.0},
            "max_stale_seconds must be greater than or equal to ttl_seconds",
        ),
        (
            {"ttl_seconds": 5.0, "max_stale_seconds": 5.0, "refresh_ahead_seconds": -1.0},
            "refresh_ahead_seconds cannot be negative",
        ),
        (
            {"ttl_seconds": 5.0, "max_stale_seconds": 5.0, "refresh_ahead_seconds": 1.0},
            "refresh_ahead_seconds is only valid with RefreshMode.REFRESH_AHEAD",
        ),
        (
            {
                "ttl_seconds": 5.0,
                "max_stale_seconds": 5.0,
                "refresh_mode": RefreshMode.REFRESH_AHEAD,
                "refresh_ahead_seconds": 6.0,
            },
            "refresh_ahead_seconds cannot exceed ttl_seconds",
        ),
    ]
    for windows, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            FreshnessPolicy(**windows)


# -- unbounded windows -------------------------------------------------------------------------

UNBOUNDED = [
    FreshnessPolicy(ttl_seconds=math.inf, max_stale_seconds=math.inf),
    FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=math.inf),
]


def test_unbounded_windows_are_accepted() -> None:
    forever, stale_forever = UNBOUNDED
    assert forever.ttl_seconds == math.inf
    assert forever.max_stale_seconds == math.inf
    assert stale_forever.ttl_seconds == 5.0
    assert stale_forever.max_stale_seconds == math.inf
    ahead = FreshnessPolicy(
        ttl_seconds=math.inf,
        max_stale_seconds=math.inf,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=3.0,
    )
    assert not ahead.should_refresh_ahead(A_LONG_TIME)  # an infinite TTL never comes near


@pytest.mark.parametrize("policy", UNBOUNDED)
def test_an_unbounded_window_never_expires(policy: FreshnessPolicy) -> None:
    assert policy.is_usable(A_LONG_TIME)
    assert policy.is_fresh(A_LONG_TIME) is (policy.ttl_seconds == math.inf)
    assert policy.is_fresh(policy.ttl_seconds if math.isfinite(policy.ttl_seconds) else 0.0)


@pytest.mark.parametrize("policy", UNBOUNDED)
async def test_the_memory_cache_never_expires_an_unbounded_value(policy: FreshnessPolicy) -> None:
    cache = AsyncMemoryCache()
    value = SnapshotValue(
        KEY,
        1,
        source="s",
        observed_at=1.0,
        fetched_at=1.0,
        age_seconds=0.0,
        stale=False,
        from_cache=False,
        latency_ms=0.0,
    )
    await cache.set(value)

    lookup = await cache.get(KEY, now=1.0 + A_LONG_TIME, policy=policy)

    assert lookup.value is not None
    assert lookup.value.value == 1
    assert lookup.fresh is (policy.ttl_seconds == math.inf)


class Counting:
    """A source counting its calls; fails once ``failing`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    def fetch(self, key: ResourceKey, context: FetchContext) -> int:
        self.calls += 1
        if self.failing:
            raise ConnectionError("down")
        return self.calls

    def source(self) -> CallableSource:
        return CallableSource(
            name="counting",
            priority=0,
            supports=lambda key: True,
            fetcher=self.fetch,
            run_sync_in_thread=False,
        )


@pytest.mark.parametrize("policy", UNBOUNDED)
async def test_a_build_serves_an_unbounded_value_forever(
    policy: FreshnessPolicy, clock: VirtualClock
) -> None:
    counting = Counting()
    async with SnapshotBuilder([counting.source()], default_policy=policy, clock=clock) as b:
        await b.build([KEY])
        await asyncio.sleep(LATER)
        counting.failing = True

        later = await b.build([KEY])

    assert later.value(KEY) == 1
    assert later[KEY].stale is (policy.ttl_seconds != math.inf)
    # A fresh value is served from the cache; a stale one is still usable when the source fails.
    assert (counting.calls == 1) is (policy.ttl_seconds == math.inf)


class ManualClock:
    """Wall-clock time that the test moves; monotonic time is real (deadlines)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.parametrize("policy", UNBOUNDED)
def test_a_sync_build_serves_an_unbounded_value_forever(policy: FreshnessPolicy) -> None:
    counting = Counting()
    clock = ManualClock()
    builder = SnapshotBuilder([counting.source()], default_policy=policy, clock=clock)
    with SyncSnapshotBuilder(builder) as sync_builder:
        sync_builder.build([KEY])
        clock.offset = A_LONG_TIME
        counting.failing = True

        later = sync_builder.build([KEY])

    assert later.value(KEY) == 1
    assert later[KEY].stale is (policy.ttl_seconds != math.inf)


# -- RetryPolicy and CircuitBreakerPolicy ------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, "3", None, 2.0])
def test_retry_max_attempts_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match=_matches("max_attempts must be an int")):
        RetryPolicy(max_attempts=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["base_delay_seconds", "max_delay_seconds", "jitter_ratio"])
@pytest.mark.parametrize("bad", NOT_FINITE)
def test_retry_delays_and_jitter_must_be_finite(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=_matches(f"{field} must be finite")):
        RetryPolicy(**{field: bad})


@pytest.mark.parametrize("bad", [2.5, "5", None])
def test_breaker_failure_threshold_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match=_matches("failure_threshold must be an int")):
        CircuitBreakerPolicy(failure_threshold=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_breaker_recovery_timeout_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match=_matches("recovery_timeout_seconds must be finite")):
        CircuitBreakerPolicy(recovery_timeout_seconds=bad)


# -- callable sources --------------------------------------------------------------------------


def _single(**options: Any) -> CallableSource:
    return CallableSource(
        name="s", priority=0, supports=lambda key: True, fetcher=lambda k, c: 1, **options
    )


def _batch(**options: Any) -> CallableBatchSource:
    return CallableBatchSource(
        name="b", priority=0, supports=lambda key: True, fetcher=lambda ks, c: {}, **options
    )


def _derived(**options: Any) -> CallableDerivedSource:
    return CallableDerivedSource(
        name="d",
        priority=0,
        supports=lambda key: True,
        dependencies=lambda key: [],
        deriver=lambda key, deps, context: 1,
        **options,
    )


@pytest.mark.parametrize("make", [_single, _batch])
@pytest.mark.parametrize("field", ["timeout_seconds", "queue_timeout_seconds"])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_callable_source_timeouts_must_be_finite(make: Any, field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=_matches(f"{field} must be finite")):
        make(**{field: bad})


@pytest.mark.parametrize("field", ["timeout_seconds", "queue_timeout_seconds"])
@pytest.mark.parametrize("bad", [0.0, -1.0, -math.inf])
def test_callable_source_timeouts_keep_the_positive_message(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be positive$"):  # B-SRC-2
        _single(**{field: bad})


@pytest.mark.parametrize("make", [_single, _batch, _derived])
@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_run_sync_in_thread_must_be_a_boolean(make: Any, bad: object) -> None:
    with pytest.raises(TypeError, match=_matches("run_sync_in_thread must be a boolean")):
        make(run_sync_in_thread=bad)


class Custom:
    """A user-defined source class with its own timeouts."""

    name = "custom"
    priority = 0

    def __init__(self, **timeouts: Any) -> None:
        self.timeout_seconds: Any = timeouts.get("timeout_seconds")
        self.queue_timeout_seconds: Any = timeouts.get("queue_timeout_seconds")

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> int:
        return 1


@pytest.mark.parametrize("field", ["timeout_seconds", "queue_timeout_seconds"])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
async def test_a_custom_source_timeout_must_be_finite_at_construction(
    field: str, bad: float
) -> None:
    with pytest.raises(ValueError, match=f"{field} must be finite"):
        SnapshotBuilder([Custom(**{field: bad})])


@pytest.mark.parametrize("field", ["timeout_seconds", "queue_timeout_seconds"])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_custom_source_timeout_must_be_finite_for_a_sync_builder(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"{field} must be finite"):
        SyncSnapshotBuilder(SnapshotBuilder([Custom(**{field: bad})]))


def test_a_finite_custom_source_timeout_is_accepted() -> None:
    builder = SnapshotBuilder([Custom(timeout_seconds=2.0, queue_timeout_seconds=1.0)])
    with SyncSnapshotBuilder(builder) as sync_builder:
        assert sync_builder.build([KEY]).value(KEY) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (math.inf, "observability_shutdown_timeout_seconds must be finite, got inf"),
        (math.nan, "observability_shutdown_timeout_seconds must be finite, got nan"),
        (0, "observability_shutdown_timeout_seconds must be > 0, got 0.0"),
    ],
)
def test_the_observability_shutdown_budget_uses_the_0_6_phrasings(bad: float, message: str) -> None:
    source = CallableSource(name="s", priority=1, supports=lambda key: True, fetcher=lambda k, c: 1)
    with pytest.raises(ValueError, match="observability_shutdown_timeout_seconds") as caught:
        SnapshotBuilder([source], observability_shutdown_timeout_seconds=bad)
    assert str(caught.value) == message
