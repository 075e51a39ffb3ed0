"""A tour of Coalestra on in-memory sources (run with ``make demo``; no services needed).

It runs on :class:`coalestra.testing.VirtualTimeLoop`, so the slow sources, TTLs and circuit
recovery below take virtual seconds and the whole tour finishes at once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from coalestra import (
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CircuitBreakerPolicy,
    CircuitScope,
    FetchContext,
    FreshnessPolicy,
    MetricsSink,
    ResourceAcceptanceRule,
    ResourceKey,
    ResourceUpdate,
    RetryPolicy,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuilder,
    SnapshotRequest,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PRICES = {"BTCUSDT": 65000.0, "ETHUSDT": 3400.0, "SOLUSDT": 150.0}


def price(symbol: str) -> ResourceKey:
    return ResourceKey("market", "price", symbol)


ACCOUNT = ResourceKey("account", "balance", "main")
PORTFOLIO = ResourceKey("account", "portfolio-value", "main")
HOLDINGS = {"BTCUSDT": 0.5, "ETHUSDT": 4.0}


async def stream_prices(key: ResourceKey, context: FetchContext) -> float:
    """A fast local stream that is broken: it always fails, so its circuit opens."""
    raise ConnectionError("stream disconnected")


async def rest_prices(keys: Collection[ResourceKey], context: FetchContext) -> Mapping[Any, float]:
    """A slower batch REST source: 40 ms per call, all symbols at once."""
    await asyncio.sleep(0.040)
    return {key: PRICES[key.subject] for key in keys}


async def read_account(key: ResourceKey, context: FetchContext) -> dict[str, float]:
    await asyncio.sleep(0.120)
    return {"USDT": 10_000.0}


def portfolio_value(key: ResourceKey, snapshot: Snapshot, context: FetchContext) -> float:
    cash = snapshot.value(ACCOUNT, dict)["USDT"]
    coins = sum(qty * snapshot.value(price(sym), float) for sym, qty in HOLDINGS.items())
    return float(cash + coins)


def make_builder(clock: VirtualClock, metrics: MetricsSink | None = None) -> SnapshotBuilder:
    is_price = lambda key: key.namespace == "market" and key.name == "price"  # noqa: E731
    stream = CallableSource(
        name="price-stream",
        priority=100,
        supports=is_price,
        fetcher=stream_prices,
        resilience_policy=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=1),
            circuit=CircuitBreakerPolicy(
                scope=CircuitScope.SOURCE, failure_threshold=2, recovery_timeout_seconds=30.0
            ),
        ),
    )
    rest = CallableBatchSource(
        name="price-rest", priority=10, supports=is_price, fetcher=rest_prices
    )
    account = CallableSource(
        name="account-db",
        priority=10,
        supports=lambda key: key == ACCOUNT,
        fetcher=read_account,
    )
    portfolio = CallableDerivedSource(
        name="portfolio",
        priority=10,
        supports=lambda key: key == PORTFOLIO,
        dependencies=lambda key: (ACCOUNT, *(price(sym) for sym in HOLDINGS)),
        deriver=portfolio_value,
    )
    return SnapshotBuilder(
        [stream, rest, account, portfolio],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=30.0),
        metrics=metrics,
    )


def show(title: str, snapshot: Snapshot, clock: VirtualClock) -> None:
    print(f"\n== {title}  (snapshot {snapshot.snapshot_id[:8]}, t={clock.monotonic():.3f}s)")
    print(f"   {'resource':<34} {'value':>14} {'source':<14} {'age s':>6} stale cache attempts")
    for key, value in snapshot.items():
        shown = value.value if not isinstance(value.value, dict) else "{...}"
        print(
            f"   {key!s:<34} {shown!s:>14} {value.source:<14} {value.age_seconds:>6.2f}"
            f" {value.stale!s:<5} {value.from_cache!s:<5} {value.attempts}"
        )
    for key, error in snapshot.errors.items():
        print(f"   {key!s:<34} ERROR {type(error).__name__}: {error}")
    d = snapshot.diagnostics
    print(
        f"   diagnostics: {d.duration_ms:.0f} ms, hits={d.cache_hits} misses={d.cache_misses}"
        f" source_calls={dict(d.source_calls_by_source)} stale={d.stale_values}"
    )


async def tour(metrics: MetricsSink | None = None) -> None:
    clock = VirtualClock()
    async with make_builder(clock, metrics) as builder:
        everything = [price(sym) for sym in SYMBOLS] + [ACCOUNT, PORTFOLIO]
        baseline = await builder.health_snapshot()

        cold = await builder.build(everything)
        show("cold build: stream fails, REST serves prices, portfolio is derived", cold, clock)

        warm = await builder.build(everything)
        show("warm build: every value from the cache", warm, clock)

        await builder.publisher.publish(
            price("BTCUSDT"), 65100.0, source="price-stream", observed_at=clock.now()
        )
        older = await builder.publisher.publish(
            price("BTCUSDT"), 64000.0, source="price-stream", observed_at=clock.now() - 10
        )
        print(f"\n== an older event for BTCUSDT was {older.status.value}")
        published = await builder.build([price("BTCUSDT"), PORTFOLIO])
        show("after a published price: the portfolio is re-derived", published, clock)

        await asyncio.sleep(8.0)
        request = SnapshotRequest(required=[ACCOUNT], optional=[price("SOLUSDT")])
        stale = await builder.build_request(request)
        show("8 s later: past TTL, refetched (blocking mode)", stale, clock)

        eth = price("ETHUSDT")
        async with builder.session(snapshot_id="cycle-42", deadline_seconds=3.0) as session:
            first = await session.resolve([eth])
            await asyncio.sleep(0.5)
            await builder.publisher.publish(
                eth, 3500.0, source="price-stream", observed_at=clock.now()
            )
            again = await session.resolve([eth])
            fresh = await builder.build([eth])
            print(
                f"\n== a session pins what it saw: {first.value(eth)} then {again.value(eth)}"
                f" (a new build sees {fresh.value(eth)})"
            )

        await asyncio.sleep(3.0)
        at_most_2s = SnapshotAcceptancePolicy(ResourceAcceptanceRule(max_age_seconds=2.0))
        try:
            await builder.build_request(
                SnapshotRequest(required=[ACCOUNT], acceptance_policy=at_most_2s)
            )
        except SnapshotAcceptanceError as error:
            (violation,) = error.violations
            print(f"\n== acceptance policy (values at most 2 s old) rejects: {violation.message}")

        updates = [
            ResourceUpdate(price(sym), PRICES[sym] * 1.01, source="price-stream") for sym in SYMBOLS
        ]
        await builder.publisher.publish_many(updates)
        health = await builder.health_snapshot()
        opened = [str(i) for i, c in health.circuits.items() if c.state.value != "closed"]
        print("\n== builder health")
        print(f"   open circuits: {opened}")
        print(f"   capacity: {dict(health.capacity)}")
        print(f"   cache: {health.cache}")
        print(
            f"   in flight: {health.singleflight_in_flight},"
            f" refreshes: {health.background_refreshes}"
        )
        assessment = health.assess(previous=baseline)
        print(f"   assessment since the first build: {assessment.severity.value}")
        for finding in assessment.findings:
            print(
                f"     {finding.severity.value}: {finding.reason.value}"
                f" ({finding.metric}={finding.observed}, threshold {finding.threshold})"
            )
        wire = health.to_dict(previous=baseline)
        print(f"   to_dict(): {len(wire)} keys, schema {wire['schema']} v{wire['schema_version']}")


def main() -> None:
    parser = argparse.ArgumentParser(description="A tour of Coalestra on in-memory sources.")
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="after the tour, print the builder's metrics as a Prometheus scrape would see them "
        "(needs the prometheus extra)",
    )
    args = parser.parse_args()
    registry = metrics = None
    if args.prometheus:
        try:  # imported only on request: the tour itself needs no extra
            from prometheus_client import CollectorRegistry, generate_latest

            from coalestra.integrations.prometheus import PrometheusMetricsSink
        except ImportError:
            parser.error('--prometheus needs the extra: pip install "coalestra[prometheus]"')
        registry = CollectorRegistry()
        metrics = PrometheusMetricsSink(registry)
    with VirtualTimeRunner() as runner:
        runner.run(tour(metrics))
    if registry is not None:
        print("\n== Prometheus exposition of the tour's metrics")
        print(generate_latest(registry).decode(), end="")


if __name__ == "__main__":
    main()
