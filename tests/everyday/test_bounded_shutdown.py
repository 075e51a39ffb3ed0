"""Issue 16 item 6: a hung stale-while-revalidate refresh cannot hang ``aclose()`` or
``async with`` (``aclose(timeout=...)``, ``close_timeout_seconds``), and an opt-in
``default_source_timeout_seconds`` bounds sources that declare no timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coalestra import (
    CallableSource,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SnapshotBuilder,
    SourceTimeoutError,
)
from coalestra.core import FetchContext
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTC")
SWR = FreshnessPolicy(
    ttl_seconds=1.0, max_stale_seconds=60.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
)
HOUR = 3600.0


class HangsAfterFirst:
    """Answers once, then hangs forever (until cancelled), noting the cancellation."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = False

    async def __call__(self, key: ResourceKey, context: FetchContext) -> int:
        self.calls += 1
        if self.calls == 1:
            return 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return 2


def source(fetcher: Any) -> CallableSource:
    return CallableSource(name="feed", priority=1, supports=lambda _key: True, fetcher=fetcher)


async def start_hung_refresh(builder: SnapshotBuilder, clock: VirtualClock) -> None:
    await builder.build([KEY])
    await asyncio.sleep(2.0)  # the value is stale now: the next build schedules a refresh
    assert (await builder.build([KEY])).value(KEY) == 1
    await asyncio.sleep(0)
    assert (await builder.health_snapshot()).background_refreshes == 1


async def test_aclose_timeout_cancels_a_hung_refresh(clock: VirtualClock) -> None:
    fetcher = HangsAfterFirst()
    builder = SnapshotBuilder([source(fetcher)], default_policy=SWR, clock=clock)
    await start_hung_refresh(builder, clock)
    started = clock.monotonic()
    await asyncio.wait_for(builder.aclose(timeout=5.0), HOUR)
    assert clock.monotonic() - started == pytest.approx(5.0)
    assert fetcher.cancelled
    assert (await builder.health_snapshot()).background_refreshes == 0


async def test_close_timeout_seconds_bounds_async_with(clock: VirtualClock) -> None:
    fetcher = HangsAfterFirst()
    built = SnapshotBuilder(
        [source(fetcher)], default_policy=SWR, clock=clock, close_timeout_seconds=2.5
    )
    assert built.close_timeout_seconds == 2.5

    async def use() -> None:
        async with built as builder:
            await start_hung_refresh(builder, clock)

    started = clock.monotonic()
    await asyncio.wait_for(use(), HOUR)
    assert clock.monotonic() - started == pytest.approx(2.0 + 2.5)
    assert fetcher.cancelled


async def test_aclose_timeout_overrides_the_builder_setting(clock: VirtualClock) -> None:
    fetcher = HangsAfterFirst()
    builder = SnapshotBuilder(
        [source(fetcher)], default_policy=SWR, clock=clock, close_timeout_seconds=100.0
    )
    await start_hung_refresh(builder, clock)
    started = clock.monotonic()
    await builder.aclose(timeout=0)
    assert clock.monotonic() - started == pytest.approx(0.0)
    assert fetcher.cancelled


async def test_refreshes_that_finish_in_time_are_not_cancelled(clock: VirtualClock) -> None:
    finished: list[int] = []

    async def slow(key: ResourceKey, context: FetchContext) -> int:
        await asyncio.sleep(1.0)
        finished.append(1)
        return len(finished)

    builder = SnapshotBuilder([source(slow)], default_policy=SWR, clock=clock)
    await builder.build([KEY])
    await asyncio.sleep(2.0)
    await builder.build([KEY])
    await builder.aclose(timeout=30.0)
    assert finished == [1, 1]


async def test_by_default_aclose_still_waits_for_refreshes(clock: VirtualClock) -> None:
    fetcher = HangsAfterFirst()
    builder = SnapshotBuilder([source(fetcher)], default_policy=SWR, clock=clock)
    assert builder.close_timeout_seconds is None
    await start_hung_refresh(builder, clock)
    with pytest.raises(asyncio.TimeoutError):  # not the builtin on 3.10
        await asyncio.wait_for(builder.aclose(), HOUR)


@pytest.mark.parametrize(("bad", "kind"), [(-1.0, ValueError), ("5", TypeError)])
async def test_bad_close_timeouts_are_refused(
    clock: VirtualClock, bad: object, kind: type[Exception]
) -> None:
    with pytest.raises(kind, match="close_timeout_seconds"):
        SnapshotBuilder([source(HangsAfterFirst())], clock=clock, close_timeout_seconds=bad)  # type: ignore[arg-type]
    builder = SnapshotBuilder([source(HangsAfterFirst())], clock=clock)
    with pytest.raises(kind, match="timeout"):
        await builder.aclose(timeout=bad)  # type: ignore[arg-type]
    await builder.aclose()


# -- default_source_timeout_seconds ----------------------------------------------------------


async def hangs(key: ResourceKey, context: FetchContext) -> int:
    await asyncio.Event().wait()
    return 1


async def test_default_source_timeout_bounds_sources_without_one(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([source(hangs)], clock=clock, default_source_timeout_seconds=3.0)
    assert builder.default_source_timeout_seconds == 3.0
    started = clock.monotonic()
    snapshot = await asyncio.wait_for(builder.build([KEY], strict=False), HOUR)
    assert clock.monotonic() - started == pytest.approx(3.0 * 2, abs=0.5)  # 2 attempts
    failure = snapshot.errors[KEY].failures[0]  # type: ignore[attr-defined]
    assert failure.error_type == SourceTimeoutError.__name__
    await builder.aclose()


async def test_a_declared_timeout_wins_over_the_default(clock: VirtualClock) -> None:
    declared = CallableSource(
        name="feed", priority=1, supports=lambda _key: True, fetcher=hangs, timeout_seconds=1.0
    )
    builder = SnapshotBuilder(
        [declared],
        clock=clock,
        default_source_timeout_seconds=50.0,
        default_resilience=None,
    )
    started = clock.monotonic()
    await builder.build([KEY], strict=False)
    assert clock.monotonic() - started < 5.0
    await builder.aclose()


async def test_without_the_option_a_hanging_source_still_hangs(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([source(hangs)], clock=clock)
    assert builder.default_source_timeout_seconds is None
    with pytest.raises(asyncio.TimeoutError):  # not the builtin on 3.10
        await asyncio.wait_for(builder.build([KEY]), HOUR)
    await builder.aclose()


@pytest.mark.parametrize(("bad", "kind"), [(0, ValueError), (-2.0, ValueError), ("1", TypeError)])
def test_bad_default_source_timeouts_are_refused(bad: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match="default_source_timeout_seconds"):
        SnapshotBuilder([source(hangs)], default_source_timeout_seconds=bad)  # type: ignore[arg-type]
