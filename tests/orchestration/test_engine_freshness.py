"""Freshness (DESIGN step 2 and 7): TTL hits, stale windows and refresh modes, stale-on-error,
per-key policies, observation-time validation and source authority in the shared cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import Gate, Single, keys, make_builder, payload, settle

from coalestra.core import (
    FreshnessPolicy,
    ObservationPolicy,
    RefreshMode,
    ResourceKey,
    ResourceResolutionError,
    SourceAuthorityPolicy,
)
from coalestra.orchestration import PolicyResolver
from coalestra.testing import VirtualClock

A, B = keys("A", "B")
ANY_AGE = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)
# Never fresh (every build calls a source) but never expired (the cache keeps every revision).
ALWAYS_FETCH = FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=1e9, allow_stale_on_error=False)


class Counter:
    """A handler returning ``n`` for the n-th call, so each refetch is visible in the value."""

    def __init__(self) -> None:
        self.n = 0
        self.failing = False

    def __call__(self, _key: ResourceKey, _ctx: Any) -> int:
        if self.failing:
            raise RuntimeError("source down")
        self.n += 1
        return self.n


def counting(delay: float = 0.0, **options: Any) -> tuple[Single, Counter]:
    handler = Counter()
    return Single("rest", 1, handler, delay=delay, **options), handler


# --- TTL and stale windows --------------------------------------------------------------------


async def test_a_fresh_value_is_served_from_the_cache_without_a_source_call(
    clock: VirtualClock,
) -> None:
    source, _ = counting()
    builder = make_builder(
        [source], clock, default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0)
    )
    await builder.build([A])
    await asyncio.sleep(9.9)

    snapshot = await builder.build([A])

    assert snapshot.value(A) == 1
    assert snapshot[A].from_cache
    assert not snapshot[A].stale
    assert len(source.calls) == 1
    diagnostics = snapshot.diagnostics
    assert (diagnostics.cache_hits, diagnostics.cache_misses) == (1, 0)
    assert (diagnostics.cache_batch_reads, diagnostics.source_calls) == (1, 0)


async def test_a_value_past_its_ttl_without_a_stale_window_is_refetched(
    clock: VirtualClock,
) -> None:
    source, _ = counting()
    builder = make_builder(
        [source], clock, default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0)
    )
    await builder.build([A])
    await asyncio.sleep(10.5)  # age 10 would still be fresh: both bounds are inclusive

    snapshot = await builder.build([A])

    assert snapshot.value(A) == 2
    assert not snapshot[A].from_cache
    assert snapshot.diagnostics.cache_misses == 1


async def test_blocking_mode_refetches_a_stale_value(clock: VirtualClock) -> None:
    source, _ = counting(delay=2.0)
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=35.0)
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)
    start = clock.monotonic()

    snapshot = await builder.build([A])

    assert snapshot.value(A) == 2
    assert not snapshot[A].stale
    assert not snapshot[A].from_cache
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert snapshot.diagnostics.refresh_scheduled == 0


async def test_stale_while_revalidate_serves_stale_and_refreshes_in_background(
    clock: VirtualClock,
) -> None:
    source, _ = counting(delay=2.0)
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=35.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)
    start = clock.monotonic()

    stale = await builder.build([A])

    assert clock.monotonic() == start  # served at once
    assert stale.value(A) == 1
    assert stale[A].stale
    assert stale[A].from_cache
    assert stale[A].age_seconds == pytest.approx(10.0)
    assert stale.stale_keys == (A,)
    assert stale.diagnostics.stale_values == 1
    assert stale.diagnostics.refresh_scheduled == 1
    assert (await builder.health_snapshot()).background_refreshes == 1

    await builder.wait_for_refreshes()
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert len(source.calls) == 2
    refreshed = await builder.build([A])
    assert refreshed.value(A) == 2
    assert refreshed[A].from_cache
    assert not refreshed[A].stale
    assert (await builder.health_snapshot()).background_refreshes == 0


async def test_concurrent_stale_reads_schedule_one_refresh(clock: VirtualClock) -> None:
    source, _ = counting(delay=2.0)
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=35.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)

    snapshots = await asyncio.gather(*(builder.build([A]) for _ in range(5)))
    await builder.wait_for_refreshes()

    assert sum(s.diagnostics.refresh_scheduled for s in snapshots) == 1
    assert len(source.calls) == 2


async def test_stale_while_revalidate_beyond_the_stale_window_blocks(clock: VirtualClock) -> None:
    source, _ = counting(delay=2.0)
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=35.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(40.0)  # well past TTL + stale window (35 s)

    snapshot = await builder.build([A])

    assert snapshot.value(A) == 2
    assert not snapshot[A].stale
    assert snapshot.diagnostics.refresh_scheduled == 0


async def test_a_failed_background_refresh_keeps_the_stale_value(clock: VirtualClock) -> None:
    source, handler = counting()
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=35.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)
    handler.failing = True

    assert (await builder.build([A])).value(A) == 1
    await builder.wait_for_refreshes()
    assert len(source.calls) == 2
    again = await builder.build([A])

    assert again.value(A) == 1
    assert again[A].stale
    assert again.diagnostics.refresh_scheduled == 1  # the failed refresh left nothing behind
    await builder.wait_for_refreshes()
    assert len(source.calls) == 3


async def test_refresh_ahead_refreshes_a_fresh_value_before_it_expires(
    clock: VirtualClock,
) -> None:
    source, _ = counting(delay=1.0)
    policy = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=3.0,
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])  # observed at t=1

    await asyncio.sleep(5.0)  # age 5: not yet inside the refresh-ahead window
    early = await builder.build([A])
    assert early.value(A) == 1
    assert early.diagnostics.refresh_scheduled == 0

    await asyncio.sleep(3.0)  # age 8: inside [7, 10)
    ahead = await builder.build([A])
    assert ahead.value(A) == 1
    assert not ahead[A].stale
    assert ahead.diagnostics.refresh_scheduled == 1
    await builder.wait_for_refreshes()

    await asyncio.sleep(4.0)  # the first value would have expired by now
    later = await builder.build([A])
    assert later.value(A) == 2
    assert later[A].from_cache
    assert not later[A].stale
    assert len(source.calls) == 2


# --- stale-on-error ---------------------------------------------------------------------------


async def test_stale_on_error_serves_the_stale_value_when_every_source_fails(
    clock: VirtualClock,
) -> None:
    source, handler = counting()
    backup = Single("backup", 0, lambda _k, _c: (_ for _ in ()).throw(RuntimeError("also down")))
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=35.0)
    builder = make_builder([source, backup], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)
    handler.failing = True

    snapshot = await builder.build([A])

    assert snapshot.value(A) == 1
    assert snapshot[A].stale
    assert snapshot[A].from_cache
    assert snapshot[A].age_seconds == pytest.approx(10.0)
    assert len(source.calls) == 2
    assert len(backup.calls) == 1


async def test_no_stale_on_error_when_the_policy_forbids_it(clock: VirtualClock) -> None:
    source, handler = counting()
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=35.0, allow_stale_on_error=False)
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(10.0)
    handler.failing = True

    snapshot = await builder.build([A], strict=False)

    assert A not in snapshot
    assert isinstance(snapshot.errors[A], ResourceResolutionError)


async def test_no_stale_on_error_beyond_the_stale_window(clock: VirtualClock) -> None:
    source, handler = counting()
    builder = make_builder(
        [source], clock, default_policy=FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=35.0)
    )
    await builder.build([A])
    await asyncio.sleep(40.0)
    handler.failing = True

    snapshot = await builder.build([A], strict=False)

    assert isinstance(snapshot.errors[A], ResourceResolutionError)


# --- per-key policies -------------------------------------------------------------------------


async def test_policy_resolver_overrides_and_dynamic_rules(clock: VirtualClock) -> None:
    c = ResourceKey("account", "balance", "C")
    source, _ = counting()
    resolver = PolicyResolver(
        FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1.0),
        overrides={A: FreshnessPolicy(ttl_seconds=100.0, max_stale_seconds=100.0)},
        dynamic=lambda k: (
            FreshnessPolicy(ttl_seconds=50.0, max_stale_seconds=50.0)
            if k.namespace == "account"
            else None
        ),
    )
    builder = make_builder([source], clock, policy_resolver=resolver)
    first = await builder.build([A, B, c])
    await asyncio.sleep(20.0)

    second = await builder.build([A, B, c])

    assert second[A].from_cache
    assert second[c].from_cache
    assert not second[B].from_cache
    assert second.value(A) == first.value(A)
    assert second.value(c) == first.value(c)
    assert source.calls.count(B) == 2
    assert source.calls.count(A) == 1

    await asyncio.sleep(40.0)  # 60 s: past c's dynamic TTL, within A's override
    third = await builder.build([A, c])
    assert third[A].from_cache
    assert not third[c].from_cache


# --- observation times ------------------------------------------------------------------------


async def test_a_future_observed_at_beyond_tolerance_is_rejected_and_falls_through(
    clock: VirtualClock,
) -> None:
    liar = Single("liar", 5, lambda _k, _c: payload("future", observed_at=clock.now() + 5.0))
    honest = Single("honest", 1, lambda _k, _c: "honest")
    builder = make_builder(
        [liar, honest], clock, observation_policy=ObservationPolicy(future_tolerance_seconds=1.0)
    )

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "honest"
    assert snapshot.diagnostics.future_timestamp_rejections == 1
    assert liar.calls == [A]
    cached = await builder.build([A])
    assert cached.value(A) == "honest"


async def test_a_rejected_future_observation_is_a_source_failure(clock: VirtualClock) -> None:
    liar = Single("liar", 5, lambda _k, _c: payload("future", observed_at=clock.now() + 60.0))
    builder = make_builder([liar], clock)

    snapshot = await builder.build([A], strict=False)

    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert [f.source for f in error.failures] == ["liar"]
    assert snapshot.diagnostics.future_timestamp_rejections == 1


async def test_a_small_future_skew_is_kept_and_recorded(clock: VirtualClock) -> None:
    skewed = Single("skewed", 1, lambda _k, _c: payload("v", observed_at=clock.now() + 0.5))
    builder = make_builder(
        [skewed], clock, observation_policy=ObservationPolicy(future_tolerance_seconds=1.0)
    )
    now = clock.now()

    value = (await builder.build([A]))[A]

    assert value.observed_at == now + 0.5  # kept as given, never clamped to now
    assert value.metadata["clock_skew_seconds"] == pytest.approx(0.5)
    assert value.age_seconds == 0.0


async def test_future_observations_can_be_kept_instead_of_rejected(
    clock: VirtualClock,
) -> None:
    skewed = Single("skewed", 1, lambda _k, _c: payload("v", observed_at=clock.now() + 30.0))
    builder = make_builder(
        [skewed],
        clock,
        observation_policy=ObservationPolicy(
            future_tolerance_seconds=1.0, reject_future_observations=False
        ),
    )

    now = clock.now()
    snapshot = await builder.build([A])

    assert snapshot[A].observed_at == now + 30.0
    assert snapshot[A].age_seconds == 0.0
    assert snapshot[A].metadata["clock_skew_seconds"] == pytest.approx(30.0)
    assert snapshot.diagnostics.future_timestamp_rejections == 0


async def test_a_source_returning_already_expired_data_falls_through(clock: VirtualClock) -> None:
    old = Single("old", 5, lambda _k, _c: payload("old", observed_at=clock.now() - 100.0))
    new = Single("new", 1, lambda _k, _c: "new")
    builder = make_builder(
        [old, new], clock, default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0)
    )

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "new"
    assert old.calls == [A]
    assert new.calls == [A]


async def test_stale_source_data_within_the_stale_window_is_the_last_resort(
    clock: VirtualClock,
) -> None:
    old = Single("old", 5, lambda _k, _c: payload("old", observed_at=clock.now() - 50.0))
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=110.0)
    builder = make_builder([old], clock, default_policy=policy)

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "old"
    assert snapshot[A].stale
    assert snapshot[A].age_seconds == pytest.approx(50.0)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0), id="expired"),
        pytest.param(
            FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=110.0, allow_stale_on_error=False),
            id="stale-on-error-off",
        ),
    ],
)
async def test_unusable_stale_source_data_is_not_served(
    clock: VirtualClock, policy: FreshnessPolicy
) -> None:
    old = Single("old", 5, lambda _k, _c: payload("old", observed_at=clock.now() - 50.0))
    builder = make_builder([old], clock, default_policy=policy)

    snapshot = await builder.build([A], strict=False)

    assert A not in snapshot
    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    assert [f.source for f in error.failures] == ["old"]


# --- source authority -------------------------------------------------------------------------

AUTHORITY = SourceAuthorityPolicy(
    source_ranks={"reconciled-local": 300, "user-data-stream": 200, "binance-rest": 100}
)


async def test_a_lower_authority_fetch_never_replaces_a_higher_authority_revision(
    clock: VirtualClock,
) -> None:
    rest = Single("binance-rest", 1, lambda _k, _c: "rest")
    builder = make_builder([rest], clock, default_policy=ALWAYS_FETCH, authority_policy=AUTHORITY)
    published = await builder.publisher.publish(
        A, "local", source="reconciled-local", observed_at=clock.now()
    )
    assert published.value.authority_rank == 300
    await asyncio.sleep(5.0)

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "rest"  # the reader gets the usable value it fetched
    assert snapshot[A].authority_rank == 100
    held = await builder.cache.get(A, now=clock.now(), policy=ANY_AGE)
    assert held.value is not None
    assert (held.value.value, held.value.source, held.value.authority_rank) == (
        "local",
        "reconciled-local",
        300,
    )


async def test_a_higher_authority_fetch_replaces_a_newer_lower_authority_revision(
    clock: VirtualClock,
) -> None:
    start = clock.now()
    local = Single("reconciled-local", 1, lambda _k, _c: payload("local", observed_at=start))
    builder = make_builder([local], clock, default_policy=ALWAYS_FETCH, authority_policy=AUTHORITY)
    await asyncio.sleep(5.0)
    await builder.publisher.publish(A, "rest", source="binance-rest", observed_at=clock.now())
    await asyncio.sleep(0.1)  # with TTL 0 a value is fresh at age 0 only

    snapshot = await builder.build([A])

    assert snapshot.value(A) == "local"
    assert snapshot[A].authority_rank == 300
    held = await builder.cache.get(A, now=clock.now(), policy=ANY_AGE)
    assert held.value is not None
    assert held.value.source == "reconciled-local"


async def test_a_higher_authority_publication_during_a_flight_is_what_readers_get(
    clock: VirtualClock,
) -> None:
    gate = Gate()

    async def rest_value(_k: ResourceKey, _c: Any) -> str:
        await gate.wait()
        return "rest"

    builder = make_builder(
        [Single("binance-rest", 1, rest_value)],
        clock,
        default_policy=FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0),
        authority_policy=AUTHORITY,
    )
    build = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    await asyncio.sleep(1.0)
    await builder.publisher.publish(A, "stream", source="user-data-stream")
    await asyncio.sleep(1.0)
    gate.open()

    snapshot = await build

    assert snapshot.value(A) == "stream"
    assert snapshot[A].authority_rank == 200
    assert (await builder.build([A])).value(A) == "stream"


async def test_equal_ranks_keep_timestamp_monotonic_writes(clock: VirtualClock) -> None:
    start = clock.now()
    same = SourceAuthorityPolicy({"reconciled-local": 200, "user-data-stream": 200})
    local = Single("reconciled-local", 1, lambda _k, _c: payload("local", observed_at=start))
    builder = make_builder([local], clock, default_policy=ALWAYS_FETCH, authority_policy=same)
    await asyncio.sleep(5.0)
    await builder.publisher.publish(A, "stream", source="user-data-stream", observed_at=start + 1)

    await builder.build([A])
    await settle()

    held = await builder.cache.get(A, now=clock.now(), policy=ANY_AGE)
    assert held.value is not None
    assert held.value.value == "stream"
