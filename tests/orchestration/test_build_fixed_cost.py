"""What the fixed cost of a build is made of keeps its meaning: the snapshot id, the build's
context, and a warm build's snapshot assembled straight from its first cache read."""

from __future__ import annotations

import asyncio
import gc
import re
from typing import Any

import pytest
from tests.doubles import in_forked_child, needs_fork
from tests.orchestration.conftest import Batch, Single, key, keys, make_builder

from coalestra.cache import AsyncMemoryCache
from coalestra.core import FetchContext, FreshnessPolicy, RefreshMode, ResourceKey
from coalestra.testing import VirtualClock

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
SWR = FreshnessPolicy(
    ttl_seconds=10.0, max_stale_seconds=100.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
)


async def test_default_snapshot_ids_are_32_hex_digits_and_never_repeat(
    clock: VirtualClock,
) -> None:
    builder = make_builder([Single("rest")], clock, default_policy=LONG)
    ids = [(await builder.build([key("a")])).snapshot_id for _ in range(200)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", snapshot_id) for snapshot_id in ids)
    assert len(set(ids)) == len(ids)
    # An id the caller gives is kept as it is (an empty one too).
    assert (await builder.build([key("a")], snapshot_id="")).snapshot_id == ""
    assert (await builder.build([key("a")], snapshot_id="mine")).snapshot_id == "mine"
    await builder.aclose()


def _one_snapshot_id() -> str:
    from coalestra.testing import VirtualTimeRunner

    async def build() -> str:
        builder = make_builder([Single("rest")], VirtualClock())
        snapshot = await builder.build([key("a")])
        await builder.aclose()
        return snapshot.snapshot_id

    with VirtualTimeRunner() as runner:
        return runner.run(build())


@needs_fork
def test_snapshot_ids_are_unique_across_forked_processes() -> None:
    _one_snapshot_id()  # the parent has handed out ids before forking
    child_id = in_forked_child(_one_snapshot_id)
    assert child_id != _one_snapshot_id()
    assert child_id[:10] != _one_snapshot_id()[:10]  # not merely the next count


async def test_the_sources_context_holds_checked_values(clock: VirtualClock) -> None:
    seen: list[FetchContext] = []

    def fetch(wanted: ResourceKey, context: FetchContext) -> Any:
        seen.append(context)
        return wanted.subject

    builder = make_builder([Single("rest", handler=fetch)], clock)
    await builder.build([key("a")], deadline_seconds=2, metadata={"tenant": "t1"})
    (context,) = seen
    assert context.requested_at == clock.now()
    assert context.deadline_at == clock.now() + 2.0
    assert context.deadline_monotonic == clock.monotonic() + 2.0
    assert dict(context.metadata) == {"tenant": "t1"}
    with pytest.raises(TypeError):  # read-only, as FetchContext makes it
        context.metadata["tenant"] = "t2"  # type: ignore[index]
    assert re.fullmatch(r"[0-9a-f]{32}", context.snapshot_id)
    await builder.aclose()


class IntClock:
    """A clock whose wall-clock readings are ints (or NaN): the context converts or refuses
    them as FetchContext does."""

    def __init__(self, now: Any) -> None:
        self._now = now

    def now(self) -> Any:
        return self._now

    def monotonic(self) -> float:
        return 5.0


async def test_a_clock_reading_becomes_a_float_requested_at_or_is_refused() -> None:
    source = Single("rest")
    builder = make_builder([source], IntClock(1_700_000_000))  # type: ignore[arg-type]
    snapshot = await builder.build([key("a")], deadline_seconds=1)
    (context,) = source.contexts
    assert (type(context.requested_at), context.requested_at) == (float, 1_700_000_000.0)
    assert (context.deadline_at, context.deadline_monotonic) == (1_700_000_001.0, 6.0)
    assert snapshot.created_at == 1_700_000_000.0
    await builder.aclose()
    broken = make_builder([Single("rest")], IntClock(float("nan")))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="requested_at must be finite"):
        await broken.build([key("a")])
    await broken.aclose()


async def test_a_warm_build_counts_the_values_it_serves_stale(clock: VirtualClock) -> None:
    cache = AsyncMemoryCache()
    builder = make_builder([Single("rest")], clock, cache=cache, default_policy=SWR)
    wanted = keys("a", "b", "c")
    await builder.build(wanted[:2])
    await asyncio.sleep(50.0)  # a and b: stale but usable
    await builder.build(wanted[2:])  # c: fresh
    snapshot = await builder.build([wanted[2], wanted[0], wanted[2], wanted[1]])
    assert list(snapshot) == [wanted[2], wanted[0], wanted[1]]  # request order, once each
    assert [snapshot[k].stale for k in snapshot] == [False, True, True]
    assert snapshot.diagnostics.stale_values == 2
    assert snapshot.diagnostics.cache_hits == 3
    assert snapshot.diagnostics.requested_resources == 3
    assert snapshot.diagnostics.resolved_resources == 3
    fresh = await builder.build([wanted[2]])
    assert fresh.diagnostics.stale_values == 0
    await builder.wait_for_refreshes()
    await builder.aclose()


async def test_a_joiner_whose_deadline_cuts_one_of_two_flights_keeps_the_other(
    clock: VirtualClock,
) -> None:
    def fetch(wanted: ResourceKey, _context: FetchContext) -> Any:
        return wanted.subject

    fast, slow = Single("fast", handler=fetch, delay=1.0), Single("slow", handler=fetch, delay=9.0)
    fast.supports = lambda wanted: wanted.subject == "a"  # type: ignore[method-assign]
    slow.supports = lambda wanted: wanted.subject == "b"  # type: ignore[method-assign]
    builder = make_builder([fast, slow], clock, default_policy=LONG)
    owners = [asyncio.ensure_future(builder.build([k])) for k in keys("a", "b")]
    await asyncio.sleep(0)  # each owns its key's flight
    joiner = await builder.build(keys("a", "b"), strict=False, deadline_seconds=5.0)
    assert joiner.value(key("a")) == "a"
    assert joiner[key("a")].metadata["coalesced_request"] is True
    error = joiner.errors[key("b")]
    assert "while waiting for the in-flight resolution of" in str(error)
    assert joiner.diagnostics.coalesced_requests == 2
    assert (await builder.health_snapshot()).deadline_exceeded_count == 1
    first, second = await asyncio.gather(*owners)
    assert (first.value(key("a")), second.value(key("b"))) == ("a", "b")
    await builder.aclose()


@pytest.mark.parametrize("kind", [list, tuple, iter], ids=["list", "tuple", "iterator"])
async def test_keys_of_any_iterable_are_checked_entry_by_entry(
    clock: VirtualClock, kind: Any
) -> None:
    builder = make_builder([Single("rest")], clock, default_policy=LONG)
    with pytest.raises(TypeError, match=r"^keys must contain only ResourceKey, got str$"):
        await builder.build(kind([key("a"), "market:price:b", None]))
    snapshot = await builder.build(kind([key("b"), key("a"), key("b")]))
    assert list(snapshot) == [key("b"), key("a")]
    await builder.aclose()


async def test_a_build_joins_the_keys_in_flight_and_owns_the_others(clock: VirtualClock) -> None:
    source = Single("rest", delay=2.0)
    builder = make_builder([source], clock, default_policy=LONG)
    owner = asyncio.ensure_future(builder.build([key("b")]))
    await asyncio.sleep(0)  # b is in flight
    mixed = await builder.build(keys("a", "b", "c"))
    assert list(mixed) == keys("a", "b", "c")
    assert mixed.diagnostics.coalesced_requests == 1
    assert mixed.diagnostics.cache_misses == 3
    assert [mixed[k].metadata.get("coalesced_request", False) for k in mixed] == [
        False,
        True,
        False,
    ]
    assert sorted(k.subject for k in source.calls) == ["a", "b", "c"]
    assert "coalesced_request" not in (await owner)[key("b")].metadata
    await builder.aclose()


async def _cyclic_garbage(rounds: Any) -> list[str]:
    """The types of the objects ``rounds()`` left that only the cyclic collector frees."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await rounds()
        gc.collect()
        return sorted({type(thing).__name__ for thing in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


OURS = {"Flight", "FlightGroup", "FlightWindow", "FetchContext", "_Share", "_Call"}


@pytest.mark.parametrize("window", [None, 0.0], ids=["no-window", "batch-window"])
async def test_finished_builds_leave_no_reference_cycles(
    clock: VirtualClock, window: float | None
) -> None:
    batch = Batch("batch", delay=1.0)
    builder = make_builder([batch], clock, default_policy=LONG, batch_window_seconds=window)

    async def rounds() -> None:
        for round_ in range(3):
            wanted = keys(*(f"r{round_}-{i}" for i in range(5)))
            builds = [builder.build(wanted) for _ in range(3)]  # one owns, two join
            builds += [builder.build([k]) for k in keys(*(f"x{round_}-{i}" for i in range(4)))]
            await asyncio.gather(*builds)

    garbage = await _cyclic_garbage(rounds)
    assert OURS.isdisjoint(garbage), garbage
    await builder.aclose()


async def test_a_build_joining_every_key_keeps_its_own_deadline_and_cancellation(
    clock: VirtualClock,
) -> None:
    source = Single("rest", delay=10.0)
    builder = make_builder([source], clock, default_policy=LONG)
    wanted = keys("a", "b")
    owner = asyncio.ensure_future(builder.build(wanted))
    await asyncio.sleep(0)  # the owner claims both keys
    late = await builder.build(wanted, strict=False, deadline_seconds=1.0)
    assert set(late.errors) == set(wanted)  # its own deadline, while the flights go on
    assert clock.monotonic() == pytest.approx(1.0)
    leaving = asyncio.ensure_future(builder.build(wanted))
    await asyncio.sleep(2.0)
    leaving.cancel()  # a joiner that leaves never cancels the fetch
    await asyncio.gather(leaving, return_exceptions=True)
    snapshot = await owner
    assert [snapshot.value(k)["subject"] for k in wanted] == ["a", "b"]
    assert (len(source.calls), source.cancelled) == (2, 0)
    # Nobody waits any more: the fetch is cancelled.
    owner = asyncio.ensure_future(builder.build(keys("c")))
    await asyncio.sleep(0)
    joiner = asyncio.ensure_future(builder.build(keys("c")))
    await asyncio.sleep(1.0)
    for build in (owner, joiner):
        build.cancel()
    await asyncio.gather(owner, joiner, return_exceptions=True)
    await asyncio.sleep(0)
    assert source.cancelled == 1
    await builder.aclose()
