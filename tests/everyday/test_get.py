"""One-key reads: ``SnapshotBuilder.get`` and ``SyncSnapshotBuilder.get`` (issue 16, item 1)."""

from __future__ import annotations

from typing import Any

import pytest

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    RetryPolicy,
    SessionClosedError,
    SnapshotBuilder,
    SnapshotBuildError,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
PRICE = ResourceKey("market", "price", "BTC")
MISSING = ResourceKey("market", "price", "NOPE")


def builder_of(calls: list[ResourceKey], **options: Any) -> SnapshotBuilder:
    async def fetch(key: ResourceKey, _ctx: FetchContext) -> dict[str, float]:
        calls.append(key)
        if key == MISSING:
            raise ConnectionError("exchange down")
        return {"price": 100.0}

    source = CallableSource(name="exchange", priority=1, supports=lambda _k: True, fetcher=fetch)
    options.setdefault("default_policy", POLICY)
    options.setdefault("retry_policy", RetryPolicy(max_attempts=1))
    return SnapshotBuilder([source], **options)


async def test_get_returns_the_payload_and_uses_the_cache(clock: VirtualClock) -> None:
    calls: list[ResourceKey] = []
    builder = builder_of(calls, clock=clock)
    assert await builder.get(PRICE) == {"price": 100.0}
    assert await builder.get(PRICE, expected_type=dict) == {"price": 100.0}
    assert calls == [PRICE]  # the second read was a cache hit
    await builder.aclose()


async def test_get_returns_a_private_copy(clock: VirtualClock) -> None:
    builder = builder_of([], clock=clock)
    first = await builder.get(PRICE)
    first["price"] = -1.0
    assert await builder.get(PRICE) == {"price": 100.0}
    await builder.aclose()


async def test_get_raises_the_keys_own_error(clock: VirtualClock) -> None:
    builder = builder_of([], clock=clock)
    with pytest.raises(ResourceResolutionError) as caught:
        await builder.get(MISSING)
    error = caught.value
    assert not isinstance(error, SnapshotBuildError)
    assert error.key == MISSING
    assert [failure.source for failure in error.failures] == ["exchange"]
    assert error.__cause__ is None
    assert error.__context__ is None
    snapshot = await builder.build([MISSING], strict=False)
    assert type(snapshot.errors[MISSING]) is type(error)
    await builder.aclose()


async def test_get_checks_its_arguments(clock: VirtualClock) -> None:
    builder = builder_of([], clock=clock)
    with pytest.raises(TypeError, match="key must be a ResourceKey, got str"):
        await builder.get("market:price:BTC")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="contains dict, expected list"):
        await builder.get(PRICE, expected_type=list)
    with pytest.raises(ValueError, match="deadline_seconds must be positive"):
        await builder.get(PRICE, deadline_seconds=0)
    await builder.aclose()
    with pytest.raises(SessionClosedError):
        await builder.get(PRICE)


async def test_get_hands_metadata_and_deadline_to_the_source(clock: VirtualClock) -> None:
    seen: list[FetchContext] = []

    async def fetch(_key: ResourceKey, ctx: FetchContext) -> int:
        seen.append(ctx)
        return 1

    source = CallableSource(name="s", priority=1, supports=lambda _k: True, fetcher=fetch)
    builder = SnapshotBuilder([source], default_policy=POLICY, clock=clock)
    assert await builder.get(PRICE, deadline_seconds=2.0, metadata={"who": "me"}) == 1
    assert seen[0].metadata == {"who": "me"}
    assert seen[0].deadline_at == pytest.approx(seen[0].requested_at + 2.0)
    await builder.aclose()


def test_sync_get_returns_the_payload_and_raises_the_keys_error() -> None:
    calls: list[ResourceKey] = []
    with SyncSnapshotBuilder(builder_of(calls)) as facade:
        assert facade.get(PRICE) == {"price": 100.0}
        assert facade.get(PRICE, expected_type=dict) == {"price": 100.0}
        with pytest.raises(ResourceResolutionError) as caught:
            facade.get(MISSING)
        assert caught.value.key == MISSING
    assert calls == [PRICE, MISSING]
