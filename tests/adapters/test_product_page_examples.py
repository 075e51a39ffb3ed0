"""Every product-page example that defines a callable source constructs unchanged and works."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from coalestra.adapters import CallableBatchSource, CallableDerivedSource, CallableSource
from coalestra.core import (
    BatchSizedSource,
    BatchSnapshotSource,
    ConcurrencyLimitedSource,
    DerivedSource,
    FetchContext,
    ResourceKey,
    Snapshot,
    SnapshotSource,
    SnapshotValue,
    SourcePayload,
)
from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitScope,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

PRICE = ResourceKey("market", "price", "BTCUSDT")


def context(clock: VirtualClock) -> FetchContext:
    return FetchContext(requested_at=clock.now(), snapshot_id="example")


async def test_minimal_build_source(clock: VirtualClock) -> None:
    source = CallableSource(
        name="rest",
        priority=10,
        supports=lambda key: key == PRICE,
        fetcher=lambda _key, _context: {"price": "65000.00"},
    )
    assert isinstance(source, SnapshotSource)
    assert source.supports(PRICE)
    assert not source.supports(ResourceKey("market", "price", "ETHUSDT"))
    payload = await source.fetch(PRICE, context(clock))
    assert payload == SourcePayload({"price": "65000.00"})


class _RemoteApi:
    """A stand-in for the page's ``remote_api``: knows two symbols, records each request."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    async def fetch_prices(self, symbols: list[str]) -> dict[str, str]:
        self.requests.append(symbols)
        await asyncio.sleep(0.2)  # network latency, on virtual time
        known = {"BTCUSDT": "65000.00", "ETHUSDT": "3500.00"}
        return {symbol: known[symbol] for symbol in symbols if symbol in known}


remote_api = _RemoteApi()


async def fetch_prices(keys, _context):  # type: ignore[no-untyped-def]  # as on the page
    symbols = [key.subject for key in keys]
    response = await remote_api.fetch_prices(symbols)
    return {key: response[key.subject] for key in keys if key.subject in response}


async def test_batch_price_source(clock: VirtualClock) -> None:
    price_source = CallableBatchSource(
        name="price-api",
        priority=100,
        supports=lambda key: key.namespace == "market" and key.name == "price",
        fetcher=fetch_prices,
    )
    assert isinstance(price_source, BatchSnapshotSource)
    eth = ResourceKey("market", "price", "ETHUSDT")
    unknown = ResourceKey("market", "price", "NOPE")
    result = await price_source.fetch_many([PRICE, eth, unknown], context(clock))
    assert dict(result) == {PRICE: SourcePayload("65000.00"), eth: SourcePayload("3500.00")}
    assert unknown not in result  # omitted: falls through to lower priorities
    assert remote_api.requests[-1] == ["BTCUSDT", "ETHUSDT", "NOPE"]


async def test_local_inline_batch_source(clock: VirtualClock) -> None:
    lock = threading.Lock()
    state = {"BTCUSDT": {"bid": 1}, "ETHUSDT": {"bid": 2}}
    threads: list[int] = []

    def supports_market(key: ResourceKey) -> bool:
        return key.namespace == "market"

    def read_local_market_state(keys, _context):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        with lock:
            return {key: state[key.subject] for key in keys if key.subject in state}

    local_source = CallableBatchSource(
        name="market-state",
        priority=100,
        supports=supports_market,
        fetcher=read_local_market_state,
        run_sync_in_thread=False,
        max_batch_size=100,
    )
    assert isinstance(local_source, BatchSizedSource)
    assert local_source.max_batch_size == 100
    assert local_source.run_sync_in_thread is False
    result = await local_source.fetch_many([PRICE], context(clock))
    assert result[PRICE].value == {"bid": 1}
    assert threads == [threading.get_ident()]  # ran inline, on the loop's thread


def extract_rules(info: dict[str, Any], symbol: str) -> dict[str, Any]:
    rules: dict[str, Any] = info["symbols"][symbol]
    return rules


async def test_derived_rules_source(clock: VirtualClock) -> None:
    exchange_info = ResourceKey("exchange", "info")
    rules_source = CallableDerivedSource(
        name="symbol-rules",
        priority=100,
        supports=lambda key: key.namespace == "exchange" and key.name == "rules",
        dependencies=lambda _key: (exchange_info,),
        deriver=lambda key, snapshot, _context: extract_rules(
            snapshot.value(exchange_info, dict),
            key.subject,
        ),
    )
    assert isinstance(rules_source, DerivedSource)
    rules_key = ResourceKey("exchange", "rules", "BTCUSDT")
    assert rules_source.supports(rules_key)
    assert rules_source.dependencies(rules_key) == (exchange_info,)
    info = {"symbols": {"BTCUSDT": {"tick": "0.01"}}}
    value = SnapshotValue(
        key=exchange_info,
        value=info,
        source="exchange-api",
        observed_at=clock.now(),
        fetched_at=clock.now(),
        age_seconds=0.0,
        stale=False,
        from_cache=False,
        latency_ms=1.0,
    )
    snapshot = Snapshot(
        snapshot_id="deps", created_at=clock.now(), resources={exchange_info: value}
    )
    payload = await rules_source.derive(rules_key, snapshot, context(clock))
    assert payload.value == {"tick": "0.01"}


async def test_rest_source_with_its_own_concurrency_limit(clock: VirtualClock) -> None:
    async def fetch_rest(key: ResourceKey, _context: FetchContext) -> str:
        return f"rest:{key.subject}"

    def supports_rest(key: ResourceKey) -> bool:
        return key.namespace == "market"

    rest_source = CallableSource(
        name="remote-rest",
        priority=10,
        supports=supports_rest,
        fetcher=fetch_rest,
        max_concurrency=4,
    )
    assert isinstance(rest_source, ConcurrencyLimitedSource)
    assert rest_source.max_concurrency == 4
    assert (await rest_source.fetch(PRICE, context(clock))).value == "rest:BTCUSDT"


def test_stream_source_with_its_own_resilience_policy() -> None:
    stream_policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(
            scope=CircuitScope.SUBJECT,
            failure_threshold=2,
            recovery_timeout_seconds=5.0,
        ),
    )

    def supports_market(key: ResourceKey) -> bool:
        return key.namespace == "market"

    def read_stream_state(key: ResourceKey, _context: FetchContext) -> int:
        return 1

    stream_source = CallableSource(
        name="market-stream",
        priority=100,
        supports=supports_market,
        fetcher=read_stream_state,
        resilience_policy=stream_policy,
    )
    assert stream_source.resilience_policy is stream_policy
