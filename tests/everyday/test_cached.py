"""Cached functions: ``coalestra.cached`` (issue 16, item 2)."""

from __future__ import annotations

import asyncio
import enum
from decimal import Decimal
from typing import Any

import pytest

from coalestra import (
    CachedFunction,
    CachedReader,
    FreshnessPolicy,
    InMemoryMetrics,
    ResourceKey,
    ResourceNotFound,
    ResourceNotFoundError,
    ResourceResolutionError,
    RetryPolicy,
    SnapshotBuilder,
    SyncCachedReader,
    SyncSnapshotBuilder,
    cached,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


class Tier(enum.Enum):
    GOLD = "gold"


def make() -> tuple[CachedFunction[Any, Any], list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []

    @cached("users", subject="user_id")
    async def profile(user_id: int, *, detail: bool = False, lang: str | None = None) -> dict:
        calls.append((user_id, detail, lang))
        await asyncio.sleep(0.01)
        if user_id < 0:
            raise ResourceNotFound(f"no user {user_id}")
        return {"id": user_id, "detail": detail}

    return profile, calls


def test_the_key_of_a_call_is_stable_and_documented() -> None:
    profile, _ = make()
    assert profile.name == "users:profile"
    assert profile.key_for(42) == ResourceKey("users", "profile", "42", {"detail": False})
    assert str(profile.key_for(42, detail=True, lang="en")) == (
        "users:profile:42?detail=True&lang=en"
    )
    assert profile.key_for(42) == profile.key_for(user_id=42, detail=False)
    assert profile.key_for(42) == profile.key_for("42")  # keys are text

    @cached("prices", "quote")
    def quote(symbol: str, tier: Tier = Tier.GOLD, size: Decimal = Decimal("1.5")) -> float:
        return 1.0

    assert str(quote.key_for("BTC")) == "prices:quote?size=1.5&symbol=BTC&tier=gold"


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, object(), (1,)])
def test_unsupported_arguments_raise_a_clear_type_error(bad: object) -> None:
    profile, _ = make()
    with pytest.raises(TypeError, match=r"argument 'lang' is a \w+, which has no stable key text"):
        profile.key_for(1, lang=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        profile.key_for()  # type: ignore[call-arg]  # missing user_id


def test_functions_with_star_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs cannot be mapped to a key"):

        @cached("x")
        async def anything(*args: int) -> int:
            return 0

    with pytest.raises(ValueError, match="subject 'id' is not a parameter"):

        @cached("x", subject="id")
        async def other(user: int) -> int:
            return 0


async def test_calls_get_the_cache_and_single_flight(clock: VirtualClock) -> None:
    profile, calls = make()
    metrics = InMemoryMetrics()
    builder = SnapshotBuilder([profile], default_policy=POLICY, clock=clock, metrics=metrics)
    read = profile.bind(builder)
    assert isinstance(read, CachedReader)
    results = await asyncio.gather(*(read(7) for _ in range(5)))
    assert results == [{"id": 7, "detail": False}] * 5
    assert await read(7) == {"id": 7, "detail": False}
    assert calls == [(7, False, None)]  # one call: single-flight, then the cache
    assert await read(7, detail=True) == {"id": 7, "detail": True}
    assert len(calls) == 2
    assert metrics.counter("source_fetch_total", source="users:profile", status="success") == 2
    await builder.aclose()


async def test_errors_and_not_found(clock: VirtualClock) -> None:
    profile, _ = make()
    builder = SnapshotBuilder(
        [profile], default_policy=POLICY, clock=clock, retry_policy=RetryPolicy(max_attempts=1)
    )
    read = profile.bind(builder)
    with pytest.raises(ResourceNotFoundError):
        await read(-1)
    with pytest.raises(TypeError, match="no stable key text"):
        await read(1, lang=["en"])  # type: ignore[arg-type]
    # A key no reader asked for has no arguments to call with.
    snapshot = await builder.build([ResourceKey("users", "profile", "9")], strict=False)
    error = snapshot.errors[ResourceKey("users", "profile", "9")]
    assert isinstance(error, ResourceResolutionError)
    assert "no call is known for users:profile:9" in str(error)
    await builder.aclose()


async def test_bind_checks_the_builder(clock: VirtualClock) -> None:
    profile, _ = make()
    other, _ = make()
    builder = SnapshotBuilder([other], default_policy=POLICY, clock=clock)
    with pytest.raises(ValueError, match="is not a source of this builder"):
        profile.bind(builder)
    with pytest.raises(TypeError, match="builder must be a SnapshotBuilder or SyncSnapshotBuilder"):
        profile.bind(object())  # type: ignore[call-overload]
    await builder.aclose()


def test_sync_functions_and_the_sync_facade() -> None:
    calls: list[str] = []

    @cached("geo", "city", subject="code")
    def city(code: str) -> str:  # a blocking lookup: runs in a worker thread
        calls.append(code)
        return {"PAR": "Paris"}[code]

    with SyncSnapshotBuilder(SnapshotBuilder([city], default_policy=POLICY)) as facade:
        read = city.bind(facade)
        assert isinstance(read, SyncCachedReader)
        assert read("PAR") == "Paris"
        assert read(code="PAR") == "Paris"
        with pytest.raises(ResourceResolutionError):
            read("XXX")
    assert calls[:2] == ["PAR", "XXX"]
