"""Sessions: every stage returns the whole session so far, stages pin what they resolve,
errors are stored, revalidation is all or nothing and re-derives dependent values.

See docs/sessions.md. Runs on virtual time: ``python examples/sessions.py``.
"""

from __future__ import annotations

import asyncio

from coalestra import (
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

PRICE = ResourceKey("market", "price", "BTCUSDT")
POSITION = ResourceKey("account", "position", "BTCUSDT")
EXPOSURE = ResourceKey("risk", "exposure", "BTCUSDT")
NEWS = ResourceKey("market", "news", "BTCUSDT")
FUNDING = ResourceKey("market", "funding", "BTCUSDT")


class Exchange:
    """In-memory state behind the sources."""

    def __init__(self) -> None:
        self.price = 100.0
        self.position = 2.0
        self.news_up = False

    async def read_price(self, key: ResourceKey, context: FetchContext) -> float:
        return self.price

    async def read_position(self, key: ResourceKey, context: FetchContext) -> float:
        return self.position

    async def read_news(self, key: ResourceKey, context: FetchContext) -> str:
        if not self.news_up:
            raise ConnectionError("news feed down")
        return "calm"


def exposure(key: ResourceKey, deps: Snapshot, context: FetchContext) -> float:
    return deps.value(POSITION, float) * deps.value(PRICE, float)


def make_builder(exchange: Exchange) -> SnapshotBuilder:
    return SnapshotBuilder(
        [
            CallableSource(
                name="rest",
                priority=10,
                supports=lambda k: k in (PRICE, FUNDING),
                fetcher=exchange.read_price,
            ),
            CallableSource(
                name="db",
                priority=10,
                supports=lambda k: k == POSITION,
                fetcher=exchange.read_position,
            ),
            CallableSource(
                name="news", priority=10, supports=lambda k: k == NEWS, fetcher=exchange.read_news
            ),
            CallableDerivedSource(
                name="risk",
                priority=10,
                supports=lambda k: k == EXPOSURE,
                dependencies=lambda key: [POSITION, PRICE],
                deriver=exposure,
                run_sync_in_thread=False,
            ),
        ],
        clock=VirtualClock(),
        default_policy=FreshnessPolicy(ttl_seconds=30.0, max_stale_seconds=300.0),
    )


async def tour() -> None:
    exchange = Exchange()
    async with make_builder(exchange) as builder:
        publisher = builder.publisher
        async with builder.session(snapshot_id="cycle-42", deadline_seconds=5.0) as session:
            stage1 = await session.resolve([EXPOSURE, NEWS], strict=False)
            print(f"== stage 1 ({stage1.snapshot_id}): exposure={stage1.value(EXPOSURE)}")
            print(f"   news failed: {type(stage1.errors[NEWS]).__name__}")

            await asyncio.sleep(1)
            await publisher.publish(PRICE, 110.0, source="stream")
            exchange.news_up = True
            stage2 = await session.resolve([EXPOSURE, NEWS], strict=False)
            outside = await builder.build([EXPOSURE])
            print(
                f"== stage 2: exposure still {stage2.value(EXPOSURE)} (pinned), news error"
                f" remembered: {NEWS in stage2.errors}; a new build sees {outside.value(EXPOSURE)}"
            )
            assert stage2.value(EXPOSURE) == 200.0
            assert outside.value(EXPOSURE) == 220.0

            stage3 = await session.resolve([NEWS], retry_errors=True)
            print(f"== stage 3 with retry_errors=True: news={stage3.value(NEWS)}")
            print(f"   the session so far: {[str(k) for k in stage3]}")
            assert list(stage3) == [EXPOSURE, NEWS]  # every stage returns the whole session

            # PRICE was resolved as a dependency of EXPOSURE: revalidating it re-derives
            # EXPOSURE, without adding PRICE to the session.
            revalidated = await session.revalidate([PRICE])
            print(
                f"== revalidate([PRICE]): {[str(k) for k in revalidated]}"
                f" -> exposure={revalidated.value(EXPOSURE)}"
            )
            assert revalidated.value(EXPOSURE) == 220.0
            assert PRICE not in revalidated

            exchange.price = 130.0  # the cache still holds 110 (fresh): only a forced read sees it
            await asyncio.sleep(1)
            forced = await session.revalidate([PRICE], force_refresh=True)
            print(f"== revalidate(force_refresh=True): exposure={forced.value(EXPOSURE)}")
            assert forced.value(EXPOSURE) == 260.0
            everything = session.snapshot()
            print(f"== pinned now: { {str(k): v.value for k, v in everything.items()} }")

            await asyncio.sleep(4)
            late = await session.resolve([FUNDING], strict=False)  # one deadline for all stages
            error = late.errors[FUNDING]
            assert isinstance(error, ResourceResolutionError)
            print(f"== after the session's deadline: {error.failures[-1].error_type}")
            assert error.failures[-1].error_type == "SnapshotDeadlineExceededError"

        health = await builder.health_snapshot()
        print(
            f"== revalidations: {health.revalidation_attempt_count} attempted,"
            f" {health.revalidation_failure_count} failed"
        )


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
