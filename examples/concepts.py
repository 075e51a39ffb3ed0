"""Concepts in one run: keys, sources and priority, provenance, authority, payload isolation.

See docs/concepts.md. Runs on real time in a few milliseconds: ``python examples/concepts.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from coalestra import (
    CASE_INSENSITIVE_KEY_NORMALIZER,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    PublishStatus,
    ResourceKey,
    Snapshot,
    SnapshotBuilder,
    SourceAuthorityPolicy,
)

ACCOUNT = ResourceKey("account", "balance", "main")
PORTFOLIO = ResourceKey("account", "portfolio-value", "main")
BOOK = ResourceKey("market", "book", "BTCUSDT")
HOLDINGS = {"BTCUSDT": 0.5, "ETHUSDT": 4.0}
BOOK_STATE = {"bids": [[64990.0, 1.5]]}


def price(symbol: str) -> ResourceKey:
    return ResourceKey("market", "price", symbol)


def is_price(key: ResourceKey) -> bool:
    return key.namespace == "market" and key.name == "price"


async def stream(
    keys: Collection[ResourceKey], context: FetchContext
) -> Mapping[ResourceKey, float]:
    """A fast batch source that only knows BTC: other keys fall through to REST."""
    return {key: 65000.0 for key in keys if key.subject == "BTCUSDT"}


async def rest(key: ResourceKey, context: FetchContext) -> float:
    return {"BTCUSDT": 64990.0, "ETHUSDT": 3400.0}[key.subject]


def read_account(key: ResourceKey, context: FetchContext) -> dict[str, float]:
    return {"USDT": 10_000.0}  # a plain function: it runs in a worker thread


def portfolio_value(key: ResourceKey, deps: Snapshot, context: FetchContext) -> float:
    cash = deps.value(ACCOUNT, dict)["USDT"]
    return cash + sum(qty * deps.value(price(sym), float) for sym, qty in HOLDINGS.items())


def read_book(key: ResourceKey, context: FetchContext) -> dict[str, list[list[float]]]:
    return BOOK_STATE  # the source keeps (and mutates) this object


def show_keys() -> None:
    candles = ResourceKey("market", "candles", "BTCUSDT", {"limit": 500, "interval": "1m"})
    folded = ResourceKey("Tenant-A", "Doc", "/A/B", normalizer=CASE_INSENSITIVE_KEY_NORMALIZER)
    print("keys")
    print(f"  {candles}  (qualifiers sorted, values as text: limit={candles.qualifier('limit')!r})")
    print(f"  {folded}  (case-insensitive normalizer)")
    assert str(candles) == "market:candles:BTCUSDT?interval=1m&limit=500"
    assert str(folded) == "tenant-a:doc:/a/b"


def make_builder() -> SnapshotBuilder:
    return SnapshotBuilder(
        [
            CallableSource(name="rest", priority=10, supports=is_price, fetcher=rest),
            CallableBatchSource(name="stream", priority=100, supports=is_price, fetcher=stream),
            CallableSource(
                name="db", priority=10, supports=lambda key: key == ACCOUNT, fetcher=read_account
            ),
            CallableDerivedSource(
                name="valuation",
                priority=10,
                supports=lambda key: key == PORTFOLIO,
                dependencies=lambda key: [ACCOUNT, *(price(sym) for sym in HOLDINGS)],
                deriver=portfolio_value,
            ),
            CallableSource(
                name="book", priority=10, supports=lambda key: key == BOOK, fetcher=read_book
            ),
        ],
        authority_policy=SourceAuthorityPolicy(source_ranks={"reconciled": 300, "stream": 200}),
    )


async def show_sources_and_provenance(builder: SnapshotBuilder) -> None:
    snapshot = await builder.build([price("BTCUSDT"), price("ETHUSDT"), PORTFOLIO])
    print("\nsources and provenance")
    for key, value in snapshot.items():
        print(
            f"  {key!s:<32} {value.value!s:>9} from {value.source:<9}"
            f" age={value.age_seconds:.3f}s attempts={value.attempts}"
        )
    assert [value.source for value in snapshot.values()] == ["stream", "rest", "valuation"]
    assert snapshot.value(PORTFOLIO) == 10_000.0 + 0.5 * 65000.0 + 4.0 * 3400.0
    assert snapshot[PORTFOLIO].dependency_versions.keys() == {
        ACCOUNT,
        price("BTCUSDT"),
        price("ETHUSDT"),
    }


async def show_authority(builder: SnapshotBuilder) -> None:
    position = ResourceKey("account", "position", "BTCUSDT")
    publisher = builder.publisher
    first = await publisher.publish(position, 1.0, source="reconciled")
    lower = await publisher.publish(position, 2.0, source="stream")
    print("\nauthority")
    print(f"  reconciled (rank {first.value.authority_rank}): {first.status.value}")
    print(f"  stream (rank {lower.value.authority_rank}), observed later: {lower.status.value}")
    assert lower.status is PublishStatus.IGNORED_LOWER_AUTHORITY


async def show_isolation(builder: SnapshotBuilder) -> None:
    first = await builder.build([BOOK])
    first.value(BOOK)["bids"].clear()  # mutate the snapshot's copy
    BOOK_STATE["bids"].append([64980.0, 2.0])  # mutate the source's object
    again = await builder.build([BOOK])  # a cache hit
    print("\npayload isolation")
    print(f"  after both mutations the cache still holds {again.value(BOOK)}")
    assert again.value(BOOK) == {"bids": [[64990.0, 1.5]]}
    assert again[BOOK].from_cache


async def main() -> None:
    show_keys()
    async with make_builder() as builder:
        await show_sources_and_provenance(builder)
        await show_authority(builder)
        await show_isolation(builder)


if __name__ == "__main__":
    asyncio.run(main())
