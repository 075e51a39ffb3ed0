"""The product page's builder examples, run unchanged (the snippets below are verbatim copies),
with tiny stand-ins for the names the page leaves to the reader (``remote_api``,
``extract_rules``, ``sources``, ``send_to_observability``, ...)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import textwrap
import threading
from typing import Any

import pytest

from coalestra import (
    CallableBatchSource,
    CallableSource,
    ResourceKey,
    SnapshotBuilder,
    SnapshotConsistencyError,
    SourcePayload,
)
from coalestra.testing import VirtualClock


async def run_snippet(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a product-page snippet (top-level ``await`` allowed) in ``namespace``."""
    compiled = compile(
        textwrap.dedent(code), "<product-page>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):
        await result
    return namespace


MINIMAL_BUILD = """
import asyncio

from coalestra import CallableSource, ResourceKey, SnapshotBuilder

PRICE = ResourceKey("market", "price", "BTCUSDT")

builder = SnapshotBuilder(
    [
        CallableSource(
            name="rest",
            priority=10,
            supports=lambda key: key == PRICE,
            fetcher=lambda _key, _context: {"price": "65000.00"},
        )
    ]
)

snapshot = asyncio.run(builder.build([PRICE]))
print(snapshot.value(PRICE, dict))
"""


def test_minimal_build(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(MINIMAL_BUILD, "<product-page>", "exec"), namespace)
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    thread = threading.Thread(target=run)  # its own thread: asyncio.run needs no running loop
    thread.start()
    thread.join(30.0)

    assert not thread.is_alive()
    assert failures == []
    assert capsys.readouterr().out == "{'price': '65000.00'}\n"
    snapshot = namespace["snapshot"]
    assert snapshot[namespace["PRICE"]].source == "rest"


BATCH_SOURCES = """
from coalestra import CallableBatchSource

async def fetch_prices(keys, _context):
    symbols = [key.subject for key in keys]
    response = await remote_api.fetch_prices(symbols)
    return {key: response[key.subject] for key in keys if key.subject in response}

price_source = CallableBatchSource(
    name="price-api",
    priority=100,
    supports=lambda key: key.namespace == "market" and key.name == "price",
    fetcher=fetch_prices,
)
"""


class RemoteApi:
    """Stand-in for the page's ``remote_api``: knows BTC and ETH prices only."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    async def fetch_prices(self, symbols: list[str]) -> dict[str, str]:
        self.requests.append(list(symbols))
        await asyncio.sleep(0.2)
        known = {"BTCUSDT": "65000.00", "ETHUSDT": "3500.00"}
        return {symbol: known[symbol] for symbol in symbols if symbol in known}


async def test_batch_sources(clock: VirtualClock) -> None:
    api = RemoteApi()
    namespace = await run_snippet(BATCH_SOURCES, {"remote_api": api})
    fallback = CallableSource(
        name="fallback",
        priority=1,
        supports=lambda key: True,
        fetcher=lambda key, _context: "fallback",
        run_sync_in_thread=False,
    )
    builder = SnapshotBuilder([fallback, namespace["price_source"]], clock=clock)
    btc, eth, doge = (ResourceKey("market", "price", s) for s in ("BTCUSDT", "ETHUSDT", "DOGE"))

    snapshot = await builder.build([btc, eth, doge])

    assert api.requests == [["BTCUSDT", "ETHUSDT", "DOGE"]]
    assert {k: v.value for k, v in snapshot.items()} == {
        btc: "65000.00",
        eth: "3500.00",
        doge: "fallback",
    }
    assert snapshot[btc].source == "price-api"
    assert snapshot.diagnostics.batch_calls == 1


DERIVED_RESOURCES = """
from coalestra import CallableDerivedSource, ResourceKey

EXCHANGE_INFO = ResourceKey("exchange", "info")

rules_source = CallableDerivedSource(
    name="symbol-rules",
    priority=100,
    supports=lambda key: key.namespace == "exchange" and key.name == "rules",
    dependencies=lambda _key: (EXCHANGE_INFO,),
    deriver=lambda key, snapshot, _context: extract_rules(
        snapshot.value(EXCHANGE_INFO, dict),
        key.subject,
    ),
)
"""


async def test_derived_resources(clock: VirtualClock) -> None:
    def extract_rules(info: dict[str, Any], symbol: str) -> dict[str, Any]:
        return info["symbols"][symbol]

    namespace = await run_snippet(DERIVED_RESOURCES, {"extract_rules": extract_rules})
    info_key = namespace["EXCHANGE_INFO"]
    fetched: list[ResourceKey] = []

    async def exchange_info(key: ResourceKey, _context: Any) -> dict[str, Any]:
        fetched.append(key)
        return {"symbols": {"BTCUSDT": {"tick": "0.01"}, "ETHUSDT": {"tick": "0.1"}}}

    info_source = CallableSource(
        name="exchange-rest",
        priority=10,
        supports=lambda key: key == info_key,
        fetcher=exchange_info,
    )
    builder = SnapshotBuilder([namespace["rules_source"], info_source], clock=clock)
    btc = ResourceKey("exchange", "rules", "BTCUSDT")
    eth = ResourceKey("exchange", "rules", "ETHUSDT")

    snapshot = await builder.build([btc, eth])

    assert snapshot.value(btc) == {"tick": "0.01"}
    assert snapshot.value(eth) == {"tick": "0.1"}
    assert fetched == [info_key]  # one shared dependency, fetched once
    assert dict(snapshot[btc].dependency_versions).keys() == {info_key}
    await builder.aclose()


CAPACITY = """
builder = SnapshotBuilder(
    sources,
    max_concurrency=12,
    max_pending_tasks=12,
    source_concurrency={
        "remote-rest": 4,
        "database": 6,
    },
)
"""

CAPACITY_ADAPTER = """
rest_source = CallableSource(
    name="remote-rest",
    priority=10,
    supports=supports_rest,
    fetcher=fetch_rest,
    max_concurrency=4,
)
"""


async def test_global_and_per_source_capacity() -> None:
    active = {"now": 0, "peak": 0}

    async def fetch_rest(key: ResourceKey, _context: Any) -> str:
        active["now"] += 1
        active["peak"] = max(active["peak"], active["now"])
        await asyncio.sleep(0.01)
        active["now"] -= 1
        return key.subject

    adapter = await run_snippet(
        CAPACITY_ADAPTER,
        {
            "CallableSource": CallableSource,
            "supports_rest": lambda key: key.namespace == "rest",
            "fetch_rest": fetch_rest,
        },
    )
    database = CallableSource(
        name="database",
        priority=5,
        supports=lambda key: key.namespace == "db",
        fetcher=lambda key, _context: key.subject,
        run_sync_in_thread=False,
    )
    namespace = await run_snippet(
        CAPACITY,
        {"SnapshotBuilder": SnapshotBuilder, "sources": [adapter["rest_source"], database]},
    )
    builder: SnapshotBuilder = namespace["builder"]

    limits = {name: snap.limit for name, snap in (await builder.capacity_snapshot()).items()}
    wanted = [ResourceKey("rest", "item", str(i)) for i in range(20)]
    wanted += [ResourceKey("db", "row", str(i)) for i in range(5)]
    snapshot = await builder.build(wanted)

    assert limits == {"__global__": 12, "remote-rest": 4, "database": 6}
    assert snapshot.complete
    assert active["peak"] == 4
    await builder.aclose()


ACCOUNT = ResourceKey("account", "summary", "main")
ALL_POSITIONS = ResourceKey("account", "positions")
POSITION = ResourceKey("account", "position", "BTCUSDT")
OPEN_ORDERS = ResourceKey("account", "open-orders", "BTCUSDT")
MARKET_HEALTH = ResourceKey("market", "health")
LEARNING_CONTEXT = ResourceKey("learning", "context")
PAGE_KEYS = {
    "ACCOUNT": ACCOUNT,
    "ALL_POSITIONS": ALL_POSITIONS,
    "POSITION": POSITION,
    "OPEN_ORDERS": OPEN_ORDERS,
    "MARKET_HEALTH": MARKET_HEALTH,
    "LEARNING_CONTEXT": LEARNING_CONTEXT,
}


def account_builder(
    clock: VirtualClock,
    *,
    failing: tuple[ResourceKey, ...] = (),
    ages: dict[ResourceKey, float] | None = None,
) -> SnapshotBuilder:
    offsets = ages or {}

    async def fetch(key: ResourceKey, _context: Any) -> SourcePayload[Any]:
        if key in failing:
            raise RuntimeError(f"{key} unavailable")
        return SourcePayload(str(key), observed_at=clock.now() - offsets.get(key, 0.0))

    source = CallableSource(name="backend", priority=1, supports=lambda key: True, fetcher=fetch)
    return SnapshotBuilder([source], clock=clock)


INTEGRATION_READY = """
from coalestra import SnapshotRequest

request = SnapshotRequest(
    required=[ACCOUNT, ALL_POSITIONS],
    optional=[MARKET_HEALTH, LEARNING_CONTEXT],
)

snapshot = await builder.build_request(request, deadline_seconds=3.0)
"""


async def test_integration_ready_requests(clock: VirtualClock) -> None:
    builder = account_builder(clock, failing=(LEARNING_CONTEXT,))

    namespace = await run_snippet(INTEGRATION_READY, {**PAGE_KEYS, "builder": builder})

    snapshot = namespace["snapshot"]
    assert set(snapshot) == {ACCOUNT, ALL_POSITIONS, MARKET_HEALTH}
    assert set(snapshot.errors) == {LEARNING_CONTEXT}


TEMPORAL_CONSISTENCY = """
from coalestra import SnapshotConsistencyPolicy, SnapshotRequest

request = SnapshotRequest(
    required=[ACCOUNT, POSITION, OPEN_ORDERS],
    optional=[MARKET_HEALTH],
    consistency_policy=SnapshotConsistencyPolicy(
        max_observation_skew_seconds=2.0,
    ),
)
"""


async def test_temporal_consistency(clock: VirtualClock) -> None:
    namespace = await run_snippet(TEMPORAL_CONSISTENCY, dict(PAGE_KEYS))
    request = namespace["request"]
    coherent = account_builder(clock, ages={MARKET_HEALTH: 5.0})  # within max_stale (10 s)
    skewed = account_builder(clock, ages={POSITION: 3.0})

    snapshot = await coherent.build_request(request)
    with pytest.raises(SnapshotConsistencyError) as caught:
        await skewed.build_request(request)

    assert set(snapshot) == {ACCOUNT, POSITION, OPEN_ORDERS, MARKET_HEALTH}
    assert caught.value.oldest_key == POSITION
    assert caught.value.newest_key in (ACCOUNT, OPEN_ORDERS)
    assert caught.value.snapshot is not None
    assert set(caught.value.snapshot) == {ACCOUNT, POSITION, OPEN_ORDERS, MARKET_HEALTH}


VERSIONED_DIAGNOSTICS = """
from coalestra import ERROR_DIAGNOSTICS_SCHEMA_VERSION, SnapshotBuildError

try:
    snapshot = await builder.build_request(request)
except SnapshotBuildError as error:
    diagnostic = error.to_dict()
    assert diagnostic["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION
    send_to_observability(diagnostic)
"""


async def test_versioned_error_diagnostics(clock: VirtualClock) -> None:
    request = (await run_snippet(INTEGRATION_READY.split("snapshot =")[0], dict(PAGE_KEYS)))[
        "request"
    ]
    sent: list[dict[str, Any]] = []
    builder = account_builder(clock, failing=(ALL_POSITIONS,))

    await run_snippet(
        VERSIONED_DIAGNOSTICS,
        {"builder": builder, "request": request, "send_to_observability": sent.append},
    )

    (diagnostic,) = sent
    assert json.loads(json.dumps(diagnostic)) == diagnostic
    assert [entry["resource"] for entry in diagnostic["errors"]] == [str(ALL_POSITIONS)]
    assert diagnostic["partial_snapshot_available"] is True


SNAPSHOT_DIAGNOSTICS = """
snapshot = await builder.build(keys)
print(snapshot.diagnostics.cache_hits)
print(snapshot.diagnostics.source_calls_by_source)
print(snapshot.diagnostics.observation_skew_ms)
"""


async def test_snapshot_diagnostics(
    clock: VirtualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    builder = account_builder(clock, ages={POSITION: 1.5})
    await builder.build([ACCOUNT])

    await run_snippet(SNAPSHOT_DIAGNOSTICS, {"builder": builder, "keys": [ACCOUNT, POSITION]})

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1"
    assert "'backend': 1" in lines[1]
    assert float(lines[2]) == pytest.approx(1500.0)


SOURCE_AUTHORITY = """
from coalestra import SnapshotBuilder, SourceAuthorityPolicy

authority = SourceAuthorityPolicy(
    source_ranks={
        "reconciled-local": 300,
        "user-data-stream": 200,
        "binance-rest": 100,
    }
)

builder = SnapshotBuilder(
    sources,
    authority_policy=authority,
)
"""


async def test_source_authority() -> None:
    position = ResourceKey("account", "position", "BTCUSDT")
    rest = CallableSource(
        name="binance-rest",
        priority=10,
        supports=lambda key: key == position,
        fetcher=lambda _key, _context: {"qty": "1.0"},
        run_sync_in_thread=False,
    )
    namespace = await run_snippet(SOURCE_AUTHORITY, {"sources": [rest]})
    builder: SnapshotBuilder = namespace["builder"]
    stream_time = builder.clock.now() - 0.5

    published = await builder.publisher.publish(
        position, {"qty": "2.0"}, source="user-data-stream", observed_at=stream_time
    )
    fetched = await builder.build([position])
    ignored = await builder.publisher.publish(position, {"qty": "3.0"}, source="binance-rest")

    assert published.value.authority_rank == 200
    assert fetched.value(position) == {"qty": "2.0"}  # fresh from the stream: no REST call
    assert fetched[position].authority_rank == 200
    assert not ignored.published  # newer, but lower authority
    assert (await builder.build([position])).value(position) == {"qty": "2.0"}
    await builder.aclose()


def test_snippets_reference_only_public_names() -> None:
    """The page imports from the top-level package; everything it uses is exported there."""
    import coalestra

    for name in (
        "CallableBatchSource",
        "CallableDerivedSource",
        "CallableSource",
        "ERROR_DIAGNOSTICS_SCHEMA_VERSION",
        "ResourceKey",
        "SnapshotBuildError",
        "SnapshotBuilder",
        "SnapshotConsistencyPolicy",
        "SnapshotRequest",
        "SourceAuthorityPolicy",
    ):
        assert name in coalestra.__all__, name
    assert CallableBatchSource is coalestra.CallableBatchSource
