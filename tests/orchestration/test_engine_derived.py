"""Derived sources: dependency snapshots, shared dependencies, cycles, dependency failures,
dependency versions and lazy invalidation, and builds that depend on each other's keys."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from tests.orchestration.conftest import (
    Derived,
    Single,
    assert_quiet,
    key,
    make_builder,
    payload,
    timed_out,
)

from coalestra.core import (
    DependencyResolutionError,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
)
from coalestra.testing import VirtualClock

X, Y, Z = key("X", "raw"), key("Y", "raw"), key("Z", "raw")
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


def graph(edges: Mapping[ResourceKey, Collection[ResourceKey]]) -> Derived:
    """A derived source for every key in ``edges``; each value is the sum of its deps."""

    def total(_key: ResourceKey, snap: Snapshot, _ctx: Any) -> int:
        return sum(snap.value(dep, int) for dep in snap)

    return Derived(
        "derived",
        50,
        lambda k: tuple(edges[k]),
        total,
        supports=lambda k: k in edges,
    )


def raw(values: Mapping[ResourceKey, int] | None = None, **options: Any) -> Single:
    table = dict(values or {X: 1, Y: 2, Z: 3})
    return Single("raw", 10, lambda k, _c: table[k], supports=lambda k: k in table, **options)


def derived_key(subject: str) -> ResourceKey:
    return key(subject, "derived")


async def test_derive_gets_an_immutable_snapshot_of_exactly_its_dependencies(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    source = Derived("sum", 5, lambda _k: (X, Y), supports=lambda kk: kk == k)
    builder = make_builder([source, raw()], clock)

    snapshot = await builder.build([k], snapshot_id="build-1")

    assert snapshot.value(k) == [1, 2]
    (deps,) = source.snapshots
    assert isinstance(deps, Snapshot)
    assert set(deps) == {X, Y}
    assert (deps.value(X), deps.value(Y)) == (1, 2)
    assert deps.errors == {}
    assert source.contexts[0].snapshot_id == "build-1"
    assert X not in snapshot  # dependencies are not added to the build's own snapshot
    assert snapshot.diagnostics.derived_calls == 1


async def test_dependency_payloads_are_isolated_from_the_deriver(clock: VirtualClock) -> None:
    k = derived_key("K")

    def vandal(_k: ResourceKey, snap: Snapshot, _ctx: Any) -> str:
        snap.value(X, dict)["mutated"] = True
        return "done"

    source = Derived("vandal", 5, lambda _k: (X,), vandal, supports=lambda kk: kk == k)
    table = Single("table", 1, lambda _k, _c: {"v": 1}, supports=lambda kk: kk == X)
    builder = make_builder([source, table], clock, default_policy=LONG)

    snapshot = await builder.build([X, k])
    again = await builder.build([X])

    assert snapshot.value(X) == {"v": 1}
    assert again.value(X) == {"v": 1}


async def test_a_dependency_requested_in_the_same_build_is_fetched_once(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    source = graph({k: (X,)})
    fetcher = raw()
    builder = make_builder([source, fetcher], clock)

    snapshot = await builder.build([k, X])

    assert snapshot.value(k) == 1
    assert snapshot.value(X) == 1
    assert fetcher.calls == [X]


async def test_diamond_dependencies_are_fetched_once(clock: VirtualClock) -> None:
    top, left, right = derived_key("top"), derived_key("left"), derived_key("right")
    source = graph({top: (left, right), left: (X,), right: (X, Y)})
    fetcher = raw(delay=0.5)
    builder = make_builder([source, fetcher], clock)

    snapshot = await builder.build([top])

    assert snapshot.value(top) == 1 + (1 + 2)
    assert sorted(fetcher.calls) == sorted([X, Y])
    assert sorted(source.calls) == sorted([top, left, right])
    await assert_quiet(builder)


async def test_diamond_requested_whole_still_fetches_each_node_once(clock: VirtualClock) -> None:
    top, left, right = derived_key("top"), derived_key("left"), derived_key("right")
    source = graph({top: (left, right), left: (X,), right: (X,)})
    fetcher = raw(delay=0.5)
    builder = make_builder([source, fetcher], clock)

    snapshot = await builder.build([right, top, X, left])

    assert {k: v.value for k, v in snapshot.items()} == {right: 1, top: 2, X: 1, left: 1}
    assert fetcher.calls == [X]
    assert sorted(source.calls) == sorted([top, left, right])


async def test_dependencies_may_come_from_the_cache(clock: VirtualClock) -> None:
    k = derived_key("K")
    fetcher = raw()
    builder = make_builder([graph({k: (X,)}), fetcher], clock, default_policy=LONG)
    await builder.build([X])

    snapshot = await builder.build([k])

    assert snapshot.value(k) == 1
    assert fetcher.calls == [X]


def on_cycle(error: Exception) -> str:
    """How a key on a dependency cycle failed (B-SRC-8): ``"closed"`` when it closed the loop
    (its failure is the DependencyCycleError), ``"dependency"`` when a dependency did."""
    assert isinstance(error, ResourceResolutionError), repr(error)
    failure = error.failures[0]
    if failure.error_type == "DependencyCycleError":
        assert failure.message.startswith("Derived resource dependency cycle detected: ")
        return "closed"
    assert failure.error_type == "DependencyResolutionError", failure
    assert "DependencyCycleError" in failure.message
    return "dependency"


async def test_direct_cycle_is_a_dependency_cycle_error(clock: VirtualClock) -> None:
    k = derived_key("self")
    source = graph({k: (k,)})
    builder = make_builder([source], clock)

    snapshot = await asyncio.wait_for(builder.build([k], strict=False), timeout=30.0)

    error = snapshot.errors[k]
    assert on_cycle(error) == "closed"
    assert error.failures[0].message.endswith(f"{k} -> {k}")  # type: ignore[attr-defined]
    assert source.calls == []
    await assert_quiet(builder)


async def test_indirect_cycle_is_a_dependency_cycle_error_with_its_path(
    clock: VirtualClock,
) -> None:
    a, b, c = derived_key("a"), derived_key("b"), derived_key("c")
    source = graph({a: (b,), b: (c,), c: (a,)})
    builder = make_builder([source], clock)

    snapshot = await asyncio.wait_for(builder.build([a], strict=False), timeout=30.0)

    error = snapshot.errors[a]
    assert on_cycle(error) == "dependency"  # c closed the loop; a failed on its dependency
    assert f"{a} -> {b} -> {c} -> " in error.failures[0].message  # type: ignore[attr-defined]
    assert source.calls == []
    await assert_quiet(builder)


async def test_every_member_of_a_requested_cycle_fails_with_a_cycle_error(
    clock: VirtualClock,
) -> None:
    a, b = derived_key("a"), derived_key("b")
    builder = make_builder([graph({a: (b,), b: (a,)})], clock)

    snapshot = await asyncio.wait_for(builder.build([a, b], strict=False), timeout=30.0)

    assert sorted(on_cycle(snapshot.errors[k]) for k in (a, b)) == ["closed", "dependency"]
    await assert_quiet(builder)


async def test_a_cycle_does_not_hide_a_lower_source_that_can_serve_the_key(
    clock: VirtualClock,
) -> None:
    k = derived_key("self")
    fallback = Single("fallback", 1, lambda _k, _c: "plain", supports=lambda kk: kk == k)
    builder = make_builder([graph({k: (k,)}), fallback], clock)

    snapshot = await asyncio.wait_for(builder.build([k]), timeout=30.0)

    assert snapshot.value(k) == "plain"


def _dependency_error_names(error: Exception, dependency: ResourceKey) -> bool:
    """A dependency failure is reported as DependencyResolutionError, either as the key's error
    or as the derived source's recorded failure; either way it names the dependency."""
    if isinstance(error, DependencyResolutionError):
        return dependency in error.errors
    assert isinstance(error, ResourceResolutionError), repr(error)
    failures = [f for f in error.failures if f.error_type == "DependencyResolutionError"]
    return bool(failures) and str(dependency) in failures[0].message


async def test_a_failed_dependency_is_a_dependency_resolution_error(clock: VirtualClock) -> None:
    k = derived_key("K")

    def broken(_k: ResourceKey, _c: Any) -> Any:
        raise RuntimeError("raw down")

    source = graph({k: (X, Y)})
    fetcher = Single("raw", 10, broken, supports=lambda kk: kk == Y)
    ok = Single("ok", 1, lambda _k, _c: 1, supports=lambda kk: kk == X)
    builder = make_builder([source, fetcher, ok], clock)

    snapshot = await builder.build([k], strict=False)

    assert _dependency_error_names(snapshot.errors[k], Y)
    assert source.calls == []


async def test_dependencies_that_raise_fail_the_derived_source_for_that_key(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")

    def no_deps(_k: ResourceKey) -> Collection[ResourceKey]:
        raise LookupError("unknown")

    source = Derived("derived", 5, no_deps, supports=lambda kk: kk == k)
    builder = make_builder([source], clock)

    snapshot = await builder.build([k], strict=False)

    error = snapshot.errors[k]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [("derived", "LookupError")]


async def test_derived_values_record_dependency_versions(clock: VirtualClock) -> None:
    k = derived_key("K")
    builder = make_builder([graph({k: (X, Y)}), raw()], clock, default_policy=LONG)

    snapshot = await builder.build([X, Y, k])

    assert dict(snapshot[k].dependency_versions) == {
        X: snapshot[X].version,
        Y: snapshot[Y].version,
    }
    assert snapshot[X].dependency_versions == {}


async def test_derived_observed_at_is_its_oldest_dependency_observation(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    now = clock.now()
    stamps = {X: now - 30.0, Y: now - 5.0}
    fetcher = Single(
        "raw",
        10,
        lambda kk, _c: payload(1, observed_at=stamps[kk]),
        supports=lambda kk: kk in stamps,
    )
    builder = make_builder([graph({k: (X, Y)}), fetcher], clock, default_policy=LONG)

    snapshot = await builder.build([k])

    assert snapshot[k].observed_at == pytest.approx(now - 30.0)


async def test_a_cached_derived_value_is_reused_until_a_dependency_changes(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    source = graph({k: (X,)})
    fetcher = raw()
    builder = make_builder([source, fetcher], clock, default_policy=LONG)

    first = await builder.build([k])
    await asyncio.sleep(1.0)
    second = await builder.build([k])

    assert len(source.calls) == 1
    assert second[k].from_cache is True
    assert second[k].version == first[k].version

    await asyncio.sleep(1.0)
    published = await builder.publisher.publish(X, 40, source="stream", observed_at=clock.now())
    assert published.published
    third = await builder.build([k])

    assert len(source.calls) == 2
    assert third.value(k) == 40
    assert third[k].from_cache is False
    assert dict(third[k].dependency_versions) == {X: published.value.version}
    assert fetcher.calls == [X]  # the new dependency value came from the cache

    fourth = await builder.build([k])
    assert len(source.calls) == 2
    assert fourth[k].from_cache is True


async def test_a_dependency_change_invalidates_transitive_derived_values(
    clock: VirtualClock,
) -> None:
    outer, inner = derived_key("outer"), derived_key("inner")
    source = graph({outer: (inner, Y), inner: (X,)})
    builder = make_builder([source, raw()], clock, default_policy=LONG)
    assert (await builder.build([outer])).value(outer) == 3

    await builder.build([outer])
    assert len(source.calls) == 2

    await asyncio.sleep(1.0)
    await builder.publisher.publish(X, 100, source="stream", observed_at=clock.now())
    snapshot = await builder.build([outer])

    assert snapshot.value(outer) == 102
    assert sorted(source.calls) == sorted([inner, outer, inner, outer])


async def test_builds_that_need_each_others_keys_do_not_deadlock(clock: VirtualClock) -> None:
    """Build 1 owns ``a`` and derives ``from_b``; build 2 owns ``b`` and derives ``from_a``.
    There is no dependency cycle, so both must complete (a deadlock shows as a deadline)."""
    a, b = key("a", "raw"), key("b", "raw")
    from_a, from_b = derived_key("from_a"), derived_key("from_b")
    source = graph({from_a: (a,), from_b: (b,)})
    fetcher = raw({a: 1, b: 2}, delay=1.0)
    builder = make_builder([source, fetcher], clock)
    start = clock.monotonic()

    first, second = await asyncio.gather(
        builder.build([a, from_b], deadline_seconds=10.0),
        builder.build([b, from_a], deadline_seconds=10.0),
    )

    assert (first.value(a), first.value(from_b)) == (1, 2)
    assert (second.value(b), second.value(from_a)) == (2, 1)
    assert sorted(fetcher.calls) == sorted([a, b])
    assert clock.monotonic() - start == pytest.approx(1.0)
    await assert_quiet(builder)


async def test_derived_keys_of_two_builds_that_need_each_others_derived_keys(
    clock: VirtualClock,
) -> None:
    """Build 1 owns ``p`` (-> ``q``'s input) and build 2 owns ``q``; each derives from the
    other's derived key: the wait graph crosses builds twice without a cycle."""
    p, q = derived_key("p"), derived_key("q")
    p_user, q_user = derived_key("p_user"), derived_key("q_user")
    source = graph({p: (X,), q: (Y,), p_user: (q,), q_user: (p,)})
    builder = make_builder([source, raw(delay=1.0)], clock)

    first, second = await asyncio.gather(
        builder.build([p, p_user], deadline_seconds=10.0),
        builder.build([q, q_user], deadline_seconds=10.0),
    )

    assert (first.value(p), first.value(p_user)) == (1, 2)
    assert (second.value(q), second.value(q_user)) == (2, 1)
    await assert_quiet(builder)


async def test_a_sibling_dependency_that_falls_through_to_a_lower_source(
    clock: VirtualClock,
) -> None:
    """``user`` (derived) depends on ``base``; the derived source also claims ``base`` but
    fails it, so ``base`` must fall through to ``fallback``. Requested together, both keys
    sit at the same derived level of one build."""
    user, base = derived_key("user"), derived_key("base")

    def derive(k: ResourceKey, snap: Snapshot, _ctx: Any) -> Any:
        if k == base:
            raise RuntimeError("cannot derive base")
        return snap.value(base) + 1

    source = Derived(
        "derived",
        50,
        lambda k: (base,) if k == user else (),
        derive,
        supports=lambda k: k in (user, base),
    )
    fallback = Single("fallback", 1, lambda _k, _c: 41, supports=lambda k: k == base)
    builder = make_builder([source, fallback], clock)
    start = clock.monotonic()

    snapshot = await builder.build([user, base], deadline_seconds=5.0, strict=False)

    assert snapshot.errors == {}
    assert (snapshot.value(base), snapshot.value(user)) == (41, 42)
    assert clock.monotonic() - start < 5.0


async def test_a_derived_key_waiting_for_dependencies_hits_the_deadline(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    source = graph({k: (X,)})
    builder = make_builder([source, raw(delay=100.0)], clock)
    start = clock.monotonic()

    snapshot = await builder.build([k], deadline_seconds=2.0, strict=False)

    assert timed_out(snapshot.errors[k])
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert source.calls == []
    await builder.aclose()
    await assert_quiet(builder)


async def test_a_true_cycle_split_across_two_builds_fails_fast(clock: VirtualClock) -> None:
    a, b = derived_key("a"), derived_key("b")
    source = graph({a: (b,), b: (a,)})
    builder = make_builder([source], clock)
    start = clock.monotonic()

    first, second = await asyncio.gather(
        builder.build([a], deadline_seconds=10.0, strict=False),
        builder.build([b], deadline_seconds=10.0, strict=False),
    )

    assert clock.monotonic() == start  # detected, not waited out until the deadline
    assert on_cycle(first.errors[a]) in {"closed", "dependency"}
    assert on_cycle(second.errors[b]) in {"closed", "dependency"}
    assert source.calls == []
    await assert_quiet(builder)


async def test_an_abandoned_derived_key_lets_go_of_its_dependencies(clock: VirtualClock) -> None:
    k = derived_key("K")
    fetcher = raw(delay=100.0)
    builder = make_builder([graph({k: (X, Y)}), fetcher], clock)

    await builder.build([k], deadline_seconds=2.0, strict=False)
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    assert fetcher.cancelled == 2  # nobody wants X and Y any more
    await assert_quiet(builder)


async def test_a_derived_key_with_a_deriver_error_falls_through(clock: VirtualClock) -> None:
    k = derived_key("K")

    def broken(*_args: Any) -> Any:
        raise ValueError("cannot derive")

    derived = Derived("derived", 50, lambda _k: (X,), broken, supports=lambda kk: kk == k)
    fallback = Single("fallback", 1, lambda _k, _c: "plain", supports=lambda kk: kk == k)
    builder = make_builder([derived, fallback, raw()], clock)

    snapshot = await builder.build([k])

    assert snapshot.value(k) == "plain"
    assert derived.calls == [k]
    alone = await make_builder(
        [Derived("derived", 50, lambda _k: (X,), broken, supports=lambda kk: kk == k), raw()], clock
    ).build([k], strict=False)
    error = alone.errors[k]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [("derived", "ValueError")]


async def test_concurrent_builds_of_a_derived_key_derive_and_fetch_once(
    clock: VirtualClock,
) -> None:
    k = derived_key("K")
    source = graph({k: (X, Y)})
    fetcher = raw(delay=1.0)
    builder = make_builder([source, fetcher], clock)

    snapshots = await asyncio.gather(*(builder.build([k]) for _ in range(50)))

    assert {s.value(k) for s in snapshots} == {3}
    assert source.calls == [k]
    assert sorted(fetcher.calls) == sorted([X, Y])
    await assert_quiet(builder)


async def test_a_dependency_nobody_supports_fails_the_derived_key(clock: VirtualClock) -> None:
    k, orphan = derived_key("K"), key("orphan", "raw")
    source = graph({k: (X, orphan)})
    builder = make_builder([source, raw()], clock)

    snapshot = await builder.build([k], strict=False)

    assert _dependency_error_names(snapshot.errors[k], orphan)
    assert source.calls == []


async def test_dependencies_must_be_resource_keys(clock: VirtualClock) -> None:
    k = derived_key("K")
    source = Derived("derived", 5, lambda _k: ("market:raw:X",), supports=lambda kk: kk == k)
    builder = make_builder([source, raw()], clock)

    snapshot = await builder.build([k], strict=False)

    error = snapshot.errors[k]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [("derived", "TypeError")]
    assert source.calls == []
