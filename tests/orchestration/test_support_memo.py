"""The table of ``supports()`` answers (``source_support_cache_max_entries``): each key's answer
is asked once while the key stays in the table; a full table drops its oldest sixteenth (at
least one answer) and keeps the rest."""

from __future__ import annotations

from coalestra import CallableSource, FetchContext, ResourceKey, SnapshotBuilder
from coalestra.cache import AsyncMemoryCache

KEYS = [ResourceKey("memo", "value", f"k{i}") for i in range(33)]


async def fetch(key: ResourceKey, context: FetchContext) -> str:
    return key.subject


def counted(asked: list[ResourceKey]) -> CallableSource:
    def supports(key: ResourceKey) -> bool:
        asked.append(key)
        return True

    return CallableSource(name="s", priority=10, supports=supports, fetcher=fetch)


def builder(asked: list[ResourceKey], bound: int | None) -> SnapshotBuilder:
    # A one-entry value cache: every build misses, so every build looks up each key's chain.
    return SnapshotBuilder(
        [counted(asked)],
        source_support_cache_max_entries=bound,
        cache=AsyncMemoryCache(max_entries=1),
    )


async def test_a_full_table_drops_its_oldest_sixteenth_and_keeps_the_rest() -> None:
    asked: list[ResourceKey] = []
    async with builder(asked, 32) as made:
        await made.build(KEYS[:32])
        await made.build([KEYS[32]])  # full: k0 and k1 (32 // 16) make room
        asked.clear()
        kept = await made.build(KEYS[2:33])
        assert asked == []
        # (the one-entry value cache still holds k32: that key needs no chain)
        assert kept.diagnostics.support_cache_hits == kept.diagnostics.cache_misses == 30
        assert kept.diagnostics.support_cache_misses == 0
        dropped = await made.build([KEYS[1]])
        assert asked == [KEYS[1]]
        assert dropped.diagnostics.support_cache_misses == 1
        await made.build([KEYS[0]])
        assert asked == [KEYS[1], KEYS[0]]


async def test_a_small_table_drops_one_answer_at_a_time() -> None:
    asked: list[ResourceKey] = []
    async with builder(asked, 2) as made:
        await made.build(KEYS[:3])  # k0 is dropped for k2
        asked.clear()
        await made.build(KEYS[1:3])
        assert asked == []
        await made.build([KEYS[0]])
        assert asked == [KEYS[0]]


async def test_an_unbounded_table_keeps_every_answer() -> None:
    asked: list[ResourceKey] = []
    async with builder(asked, None) as made:
        await made.build(KEYS)
        asked.clear()
        snapshot = await made.build(KEYS)
        assert asked == []
        assert snapshot.diagnostics.support_cache_hits == snapshot.diagnostics.cache_misses == 32
