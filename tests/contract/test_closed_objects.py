"""Contract: using closed objects (B-ERR-9), and the builder's publisher after ``aclose()``."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from coalestra import (
    AsyncMemoryCache,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceUpdate,
    SessionClosedError,
    SnapshotBuilder,
    SnapshotRequest,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

A = ResourceKey("test", "value", "A")
POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
BUILDER_CLOSED = "^SnapshotBuilder is closed$"
SYNC_BUILDER_CLOSED = "^SyncSnapshotBuilder is closed$"
SYNC_SESSION_CLOSED = "^SyncSnapshotSession is closed$"
SESSION_CLOSED = "^SnapshotSession is closed$"


async def fetch(key: ResourceKey, context: FetchContext) -> str:
    return f"value-{key.subject}"


def make_builder(clock: VirtualClock | None = None, **options: Any) -> SnapshotBuilder:
    source = CallableSource(name="rest", priority=1, supports=lambda _key: True, fetcher=fetch)
    return SnapshotBuilder([source], clock=clock, default_policy=POLICY, **options)


# -- the async builder -------------------------------------------------------------------------


async def test_b_err_9_builds_and_sessions_after_aclose_raise(clock: VirtualClock) -> None:
    builder = make_builder(clock)
    await builder.aclose()
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        await builder.build([A])
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        await builder.build_request(SnapshotRequest(required=[A]))
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        builder.session()


async def test_b_err_9_a_session_of_a_closed_builder_raises(clock: VirtualClock) -> None:
    builder = make_builder(clock)
    session = builder.session()
    await session.resolve([A])
    await builder.aclose()
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        await session.resolve([A])
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        await session.resolve_request(SnapshotRequest(required=[A]))
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        await session.revalidate([A])
    assert session.closed


async def test_b_err_9_a_closed_session_raises_session_closed_error(clock: VirtualClock) -> None:
    builder = make_builder(clock)
    session = builder.session()
    await session.resolve([A])
    await session.close()
    await session.close()  # idempotent
    calls: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: session.resolve([A]),
        lambda: session.resolve_request(SnapshotRequest(required=[A])),
        lambda: session.revalidate([A]),
        session.__aenter__,
    ]
    for call in calls:
        with pytest.raises(SessionClosedError, match=SESSION_CLOSED):
            await call()
    with pytest.raises(SessionClosedError, match=SESSION_CLOSED):
        session.snapshot()
    assert not builder.closed
    await builder.aclose()


async def test_b_err_9_async_with_on_a_closed_builder_raises(clock: VirtualClock) -> None:
    builder = make_builder(clock)
    async with builder:
        pass
    with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
        async with builder:
            pytest.fail("entered a closed builder")


async def test_b_err_9_the_publisher_refuses_work_after_aclose(clock: VirtualClock) -> None:
    cache = AsyncMemoryCache()
    builder = make_builder(clock, cache=cache)
    publisher = builder.publisher
    await publisher.publish(A, "before", source="stream")
    await builder.aclose()

    refused: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: publisher.publish(A, "after", source="stream"),
        lambda: publisher.publish_update(ResourceUpdate(A, "after", source="stream")),
        lambda: publisher.publish_many([ResourceUpdate(A, "after", source="stream")]),
        lambda: publisher.invalidate(A),
        lambda: publisher.invalidate_many([A]),
    ]
    for call in refused:
        with pytest.raises(RuntimeError, match=BUILDER_CLOSED):
            await call()
    lookup = await cache.get(A, now=clock.now(), policy=POLICY)
    assert lookup.value is not None
    assert lookup.value.value == "before"


async def test_b_err_9_the_closed_error_is_also_a_session_closed_error(
    clock: VirtualClock,
) -> None:
    """Our earlier releases raised SessionClosedError for a closed builder: still caught."""
    builder = make_builder(clock)
    await builder.aclose()
    with pytest.raises(SessionClosedError):
        await builder.build([A])


# -- the synchronous facade --------------------------------------------------------------------


@pytest.fixture
def closed_facade() -> SyncSnapshotBuilder:
    facade = SyncSnapshotBuilder(make_builder())
    facade.close()
    return facade


def test_b_err_9_every_sync_builder_call_after_close_raises(
    closed_facade: SyncSnapshotBuilder,
) -> None:
    facade = closed_facade
    publisher = facade.publisher
    update = ResourceUpdate(A, 1, source="stream")
    calls: list[Callable[[], object]] = [
        lambda: facade.build([A]),
        lambda: facade.build_request(SnapshotRequest(required=[A])),
        facade.session,
        facade.wait_for_refreshes,
        facade.health_snapshot,
        lambda: facade.flush_submissions(timeout_seconds=1.0),
        lambda: publisher.publish(A, 1, source="stream"),
        lambda: publisher.publish_update(update),
        lambda: publisher.publish_many([update]),
        lambda: publisher.invalidate(A),
        lambda: publisher.invalidate_many([A]),
        lambda: publisher.flush(timeout_seconds=1.0),
        lambda: publisher.submit_publish(A, 1, source="stream"),
        lambda: publisher.submit_publish_update(update),
        lambda: publisher.submit_publish_many([update]),
        lambda: publisher.submit_invalidate(A),
        lambda: publisher.submit_invalidate_many([A]),
        facade.__enter__,
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=SYNC_BUILDER_CLOSED):
            call()
    facade.close()  # idempotent
    assert facade.closed


def test_b_err_9_a_closed_sync_session_raises() -> None:
    with SyncSnapshotBuilder(make_builder()) as facade:
        session = facade.session()
        session.resolve([A])
        session.close()
        session.close()  # idempotent
        calls: list[Callable[[], object]] = [
            lambda: session.resolve([A]),
            lambda: session.resolve_request(SnapshotRequest(required=[A])),
            lambda: session.revalidate([A]),
            session.snapshot,
            session.__enter__,
        ]
        for call in calls:
            with pytest.raises(RuntimeError, match=SYNC_SESSION_CLOSED):
                call()
        assert session.closed


def test_b_err_9_a_sync_session_of_a_closed_facade_raises() -> None:
    facade = SyncSnapshotBuilder(make_builder())
    session = facade.session()
    facade.close()
    with pytest.raises(RuntimeError, match=re.escape("SyncSnapshotBuilder is closed")):
        session.resolve([A])
    assert session.closed
