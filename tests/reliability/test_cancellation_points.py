"""A cancellation (or an ``aclose()``) injected at every await point of a build, one at a time.

One scenario exercises most of a build's awaits: a cache read (with the default cache, and with
one that suspends on every call as a remote cache would), a stale-while-revalidate hit
with its background refresh, single-key calls with a retry and its backoff, a batch source in
chunks, a derived key whose dependencies are flights of their own, capacity contention
(``max_concurrency=2``), the batched cache write, and a second build joining the first one's
flights. A :class:`~tests.reliability.conftest.SuspensionCounter` counts every suspension of
every task the scenario creates; a clean run gives the total ``T``, then for each ``N`` in
``1..T`` a fresh run fires the action at the Nth suspension:

* ``cancel_build``: the first build is cancelled there. It must end cancelled (never swallow
  the cancellation), the joining build must still get every value (a cancelled owner never
  strands joiners), and nothing may be left behind;
* ``cancel_joiner``: the joining build is cancelled there; the first build must be unaffected;
* ``aclose``: the builder is closed there; both builds end with a snapshot or a documented
  error, and ``aclose()`` leaves no task, slot, waiter or flight behind.

In every case the cache holds only values a source produced for that very key, and (unless
closed) the builder still builds everything afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.doubles import ForwardsGetMany, ForwardsSetIfNewer, ForwardsSetManyIfNewer
from tests.orchestration.conftest import Batch, Derived, Single, key, make_builder
from tests.reliability.conftest import SuspensionCounter, leftovers, task_baseline

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    CoalestraError,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    Snapshot,
    SnapshotBuildError,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock, VirtualTimeRunner

A, B = key("A"), key("B")
X1, X2, X3 = (key(s, name="volume") for s in ("X1", "X2", "X3"))
DER = key("D", name="derived")
SWR = key("S", name="swr")
MAIN = [A, B, X1, X2, X3, DER, SWR]
JOINER = [B, X1, DER]
POLICIES = PolicyResolver(
    FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0),
    overrides={
        SWR: FreshnessPolicy(
            ttl_seconds=5.0, max_stale_seconds=65.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
        )
    },
)
RETRY = RetryPolicy(max_attempts=2, base_delay_seconds=0.1, jitter_ratio=0.0)


def good(value: Any, wanted: ResourceKey) -> bool:
    """True when ``value`` is what some source produces for ``wanted``."""
    return isinstance(value, dict) and value.get("subject") == wanted.subject


class YieldingCache(ForwardsGetMany, ForwardsSetIfNewer, ForwardsSetManyIfNewer):
    """An :class:`AsyncMemoryCache` that suspends once on every call, as a remote cache would:
    each cache read and write of a build becomes a point where a cancellation can land."""

    validates_source_authority = True

    async def before(self, call: str, count: int) -> None:
        if call != "clear":
            await asyncio.sleep(0)


def scenario(clock: VirtualClock, cache: str) -> SnapshotBuilder:
    failed_once: set[ResourceKey] = set()

    async def prices(k: ResourceKey, _c: Any) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        if k == A and k not in failed_once:
            failed_once.add(k)
            raise RuntimeError("first call fails, the retry succeeds")
        return {"subject": k.subject, "from": "hi"}

    async def derive(k: ResourceKey, snap: Snapshot, _c: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"subject": k.subject, "inputs": sorted(v.value["subject"] for v in snap.values())}

    sources = [
        Single("hi", 30, prices, supports=lambda k: k.name in {"price", "swr"}),
        Derived("der", 25, deps=lambda _k: (A, X1), handler=derive, supports=lambda k: k == DER),
        Batch("batch", 20, supports=lambda k: k.name == "volume", delay=0.1, max_batch_size=2),
        Single("lo", 1, delay=0.05),
    ]
    return make_builder(
        sources,
        clock,
        policy_resolver=POLICIES,
        retry_policy=RETRY,
        max_concurrency=2,
        max_pending_tasks=2,
        cache=YieldingCache() if cache == "yielding" else AsyncMemoryCache(),
    )


@dataclass
class Run:
    """One run of the scenario with the action fired at one suspension."""

    builder: SnapshotBuilder
    main: asyncio.Task[Snapshot]
    joiner: asyncio.Task[Snapshot]
    counter: SuspensionCounter
    cancel_landed: bool = False
    closing: list[asyncio.Task[None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def run_scenario(clock: VirtualClock, action: str, fire_at: int | None, cache: str) -> Run:
    builder = scenario(clock, cache)
    await builder.publisher.publish(
        SWR, {"subject": "S", "from": "stream"}, source="stream", observed_at=clock.now() - 10.0
    )
    holder: dict[str, Any] = {}

    def fire() -> None:
        run: Run = holder["run"]
        if action == "cancel_build":
            run.cancel_landed = run.main.cancel()
        elif action == "cancel_joiner":
            run.cancel_landed = run.joiner.cancel()
        else:
            run.closing.append(asyncio.ensure_future(builder.aclose()))

    counter = SuspensionCounter(fire_at, fire)
    with counter:
        loop = asyncio.get_running_loop()
        main = loop.create_task(builder.build(MAIN, deadline_seconds=30.0))
        joiner = loop.create_task(builder.build(JOINER))
        run = holder["run"] = Run(builder, main, joiner, counter)
        await asyncio.wait([main, joiner], timeout=600.0)
        await builder.wait_for_refreshes()
        if run.closing:
            await asyncio.wait(run.closing, timeout=600.0)
    return run


def check_builds(run: Run, action: str) -> None:
    for name, task in (("first build", run.main), ("joining build", run.joiner)):
        if not task.done():
            run.problems.append(f"the {name} never finished")
            continue
        cancelled_here = run.cancel_landed and (
            (action == "cancel_build" and task is run.main)
            or (action == "cancel_joiner" and task is run.joiner)
        )
        if task.cancelled():
            if not cancelled_here:
                run.problems.append(f"the {name} was cancelled by nobody")
            continue
        if cancelled_here:
            run.problems.append(f"the {name} swallowed its cancellation")
            continue
        error = task.exception()
        if error is None:
            snapshot = task.result()
            if action != "aclose" and not snapshot.complete:
                run.problems.append(f"the {name} is incomplete: {dict(snapshot.errors)}")
        elif action == "aclose" and isinstance(error, CoalestraError):
            snapshot = error.snapshot if isinstance(error, SnapshotBuildError) else None
        else:
            run.problems.append(f"the {name} raised {error!r}")
            continue
        if snapshot is not None:
            bad = [k for k, v in snapshot.items() if not good(v.value, k)]
            if bad:
                run.problems.append(f"the {name} got wrong values for {bad}")


async def check_aftermath(run: Run, action: str, baseline: set[asyncio.Task[Any]]) -> None:
    builder = run.builder
    if action != "aclose":
        run.problems.extend(f"before aclose: {p}" for p in await leftovers(builder, baseline))
    memory: Any = getattr(builder.cache, "inner", builder.cache)
    found = await memory.get_many(
        MAIN, now=builder.clock.now(), policies=dict.fromkeys(MAIN, FreshnessPolicy(1e9, 1e9))
    )
    for wanted, lookup in found.items():
        if lookup.value is not None and not good(lookup.value.value, wanted):
            run.problems.append(f"cache holds {lookup.value.value!r} for {wanted}")
    if action != "aclose":
        again = await builder.build(MAIN, strict=False)
        if not again.complete:
            run.problems.append(f"the builder no longer builds: {dict(again.errors)}")
    await builder.aclose()
    run.problems.extend(f"after aclose: {p}" for p in await leftovers(builder, baseline))


@pytest.mark.parametrize("cache", ["memory", "yielding"])
@pytest.mark.parametrize("action", ["cancel_build", "cancel_joiner", "aclose"])
async def test_an_interruption_at_every_await_point_leaves_nothing_behind(
    clock: VirtualClock, action: str, cache: str
) -> None:
    baseline = task_baseline()
    clean = await run_scenario(clock, action, None, cache)
    check_builds(clean, "clean")
    await check_aftermath(clean, "clean", baseline)
    assert clean.problems == []
    total = clean.counter.count
    assert total >= 15, "the scenario should suspend at many points"

    problems: dict[int, list[str]] = {}
    fired = 0
    for fire_at in range(1, total + 1):
        run = await run_scenario(clock, action, fire_at, cache)
        fired += run.counter.fired
        check_builds(run, action)
        await check_aftermath(run, action, baseline)
        if run.problems:
            problems[fire_at] = run.problems

    assert fired >= total - 5, "the action should fire in (nearly) every run"
    assert problems == {}


def test_the_counter_cancels_exactly_at_the_chosen_suspension() -> None:
    """The harness itself: cancelling at suspension N cancels the Nth await, no other."""

    async def scenario_of(n: int) -> tuple[int, list[int]]:
        reached: list[int] = []

        async def steps() -> None:
            for index in range(1, 6):
                reached.append(index)
                await asyncio.sleep(0)

        holder: dict[str, asyncio.Task[None]] = {}
        with SuspensionCounter(n, lambda: holder["task"].cancel()):
            task = holder["task"] = asyncio.get_running_loop().create_task(steps())
            await asyncio.wait([task])
        assert task.cancelled()
        return n, reached

    with VirtualTimeRunner() as runner:
        for n in range(1, 6):
            assert runner.run(scenario_of(n)) == (n, list(range(1, n + 1)))
