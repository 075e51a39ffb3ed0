"""Resource versions tell revisions of one key apart: every new revision of a key gets a new
version, while the new revisions of distinct keys that one build writes together share one
(one string per write, not per key). Dependency checks compare versions per key, so a derived
value whose dependency changed is still derived again."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.orchestration.conftest import Batch, Derived, Single, key, make_builder

from coalestra.cache import ResourceUpdate
from coalestra.core import FreshnessPolicy, ResourceKey, Snapshot, SnapshotValue
from coalestra.testing import VirtualClock, VirtualTimeRunner

X, Y, Z = key("X", "raw"), key("Y", "raw"), key("Z", "raw")
SHORT = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1.0)
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


def counting() -> Single:
    """A single-key source whose payload changes with every call."""
    served = iter(range(1_000_000))
    return Single("raw", 10, lambda _k, _c: next(served), supports=lambda k: k in (X, Y, Z))


async def test_values_a_build_writes_together_share_one_version(clock: VirtualClock) -> None:
    builder = make_builder([counting()], clock, default_policy=LONG)

    snapshot = await builder.build([X, Y, Z])

    assert len({snapshot[k].version for k in (X, Y, Z)}) == 1
    assert all(snapshot[k].from_cache is False for k in (X, Y, Z))


async def test_a_batch_call_s_values_share_one_version(clock: VirtualClock) -> None:
    builder = make_builder([Batch("batch", 10)], clock, default_policy=LONG)

    snapshot = await builder.build([X, Y])

    assert snapshot[X].version == snapshot[Y].version


async def test_every_revision_of_a_key_gets_a_new_version(clock: VirtualClock) -> None:
    builder = make_builder([counting()], clock, default_policy=SHORT)
    seen: dict[tuple[ResourceKey, str], Any] = {}

    for round_ in range(6):
        keys = [X, Y, Z] if round_ % 2 else [X, Y]  # the writes group keys differently
        snapshot = await builder.build(keys)
        for k in keys:
            value = snapshot[k]
            assert seen.setdefault((k, value.version), value.value) == value.value
        published = await builder.publisher.publish(Z, round_, source="stream", force=True)
        assert published.value is not None
        assert (Z, published.value.version) not in seen
        seen[Z, published.value.version] = round_
        await asyncio.sleep(2.0)  # past the TTL: the next build fetches again

    assert len({version for k, version in seen if k == X}) == 6


async def test_a_derived_value_is_derived_again_when_a_dependency_written_with_others_changes(
    clock: VirtualClock,
) -> None:
    derived = key("K", "derived")

    def total(_key: ResourceKey, snap: Snapshot, _ctx: Any) -> int:
        return sum(snap.value(dep, int) for dep in snap)

    source = Derived("derived", 50, lambda _k: (X,), total, supports=lambda k: k == derived)
    builder = make_builder([source, counting()], clock, default_policy=LONG)
    first = await builder.build([X, Y])  # X and Y written together: one version
    assert first[X].version == first[Y].version

    second = await builder.build([derived])
    assert dict(second[derived].dependency_versions) == {X: first[X].version}
    # A new revision of X (refetched with Z, in a later write): the derived value is stale.
    await builder.cache.invalidate(X)
    third = await builder.build([X, Z])
    assert third[X].version != first[X].version
    fourth = await builder.build([derived])

    assert len(source.calls) == 2
    assert fourth[derived].from_cache is False
    assert dict(fourth[derived].dependency_versions) == {X: third[X].version}
    assert fourth.value(derived) == third.value(X)


async def test_one_publish_many_call_s_revisions_share_one_version(clock: VirtualClock) -> None:
    builder = make_builder([counting()], clock, default_policy=LONG)
    first = await builder.publisher.publish_many(
        [ResourceUpdate(X, 1, "stream"), ResourceUpdate(Y, 2, "stream")]
    )
    await asyncio.sleep(1.0)
    second = await builder.publisher.publish_many(
        [ResourceUpdate(X, 3, "stream"), ResourceUpdate(X, 4, "stream")]  # one key twice
    )

    versions = {k: result.value.version for k, result in first.items() if result.value}
    assert versions[X] == versions[Y]
    assert list(second) == [X]  # the later update won; the other was never a revision
    winner = second[X].value
    assert winner is not None
    assert winner.value == 4
    assert winner.version != versions[X]
    snapshot = await builder.build([X, Y])
    assert (snapshot[X].version, snapshot[Y].version) == (winner.version, versions[Y])


async def test_a_derived_value_follows_a_dependency_published_with_others(
    clock: VirtualClock,
) -> None:
    derived = key("K", "derived")

    def total(_key: ResourceKey, snap: Snapshot, _ctx: Any) -> int:
        return sum(snap.value(dep, int) for dep in snap)

    source = Derived("derived", 50, lambda _k: (X, Y), total, supports=lambda k: k == derived)
    builder = make_builder([source, counting()], clock, default_policy=LONG)
    publish_many = builder.publisher.publish_many
    await publish_many([ResourceUpdate(X, 10, "stream"), ResourceUpdate(Y, 20, "stream")])
    assert (await builder.build([derived])).value(derived) == 30
    await asyncio.sleep(1.0)
    await publish_many([ResourceUpdate(Y, 5, "stream"), ResourceUpdate(Z, 7, "stream")])

    again = await builder.build([derived])

    assert again.value(derived) == 15
    assert again[derived].from_cache is False
    assert len(source.calls) == 2


_ops = st.lists(
    st.tuples(
        st.sampled_from(["build", "publish", "publish_many", "invalidate"]),
        st.lists(st.sampled_from([X, Y, Z]), min_size=1, max_size=4),  # duplicates included
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_versions_name_one_revision_per_key_and_derived_values_follow(
    ops: list[tuple[str, list[ResourceKey]]],
) -> None:
    """Whatever mix of builds, publications and invalidations: a (key, version) pair always
    names the same revision, and a derived value served (cached or not) matches the values of
    its dependencies served with it."""
    derived = key("K", "derived")

    def total(_key: ResourceKey, snap: Snapshot, _ctx: Any) -> int:
        return sum(snap.value(dep, int) for dep in snap)

    async def scenario() -> None:
        source = Derived("derived", 50, lambda _k: (X, Y), total, supports=lambda k: k == derived)
        builder = make_builder([source, counting()], VirtualClock(), default_policy=LONG)
        seen: dict[tuple[ResourceKey, str], tuple[Any, float]] = {}
        published = iter(range(1_000, 1_000_000))

        def record(value: SnapshotValue[Any] | None) -> None:
            if value is not None:
                revision = (value.value, value.observed_at)
                assert seen.setdefault((value.key, value.version), revision) == revision

        for op, keys in ops:
            await asyncio.sleep(1.0)
            publisher = builder.publisher
            if op == "build":
                snapshot = await builder.build(keys)
                for k in set(keys):
                    record(snapshot[k])
            elif op == "publish":
                record((await publisher.publish(keys[0], next(published), source="s")).value)
            elif op == "publish_many":
                updates = [ResourceUpdate(k, next(published), "s") for k in keys]
                for result in (await publisher.publish_many(updates)).values():
                    record(result.value)
            else:  # the next check fetches these again, together
                await builder.cache.invalidate_many(set(keys))
            check = await builder.build([derived, X, Y])
            for k in (derived, X, Y):
                record(check[k])
            assert check.value(derived) == check.value(X) + check.value(Y)
        await builder.aclose()

    with VirtualTimeRunner() as runner:
        runner.run(scenario())
