"""SyncSnapshotBuilder: the product page example, blocking calls, threads, bad input."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from tests.sync.conftest import (
    ACCOUNT,
    LONG,
    OPEN_ORDERS,
    POSITION,
    PRICE,
    Source,
    facade_threads,
    key,
)

from coalestra import ResourceUpdate, SyncSnapshotBuilder
from coalestra.adapters import CallableSource
from coalestra.core import (
    BuilderHealth,
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuildError,
    SnapshotRequest,
)
from coalestra.orchestration import SnapshotBuilder


def test_product_page_example() -> None:
    position = {"qty": "0.5"}
    orders = [{"id": 1, "side": "buy"}]
    rest = CallableSource(
        name="rest",
        priority=10,
        supports=lambda _key: True,
        fetcher=lambda _key, _context: {"from": "rest"},
    )
    builder = SnapshotBuilder([rest], default_policy=LONG)

    with SyncSnapshotBuilder(
        builder,
        max_pending_submissions=256,
    ) as sync_builder:
        # Blocking publication remains available for callers that need the result immediately.
        sync_builder.publisher.publish(
            PRICE,
            {"price": "65001.25"},
            source="market-stream",
        )

        # Non-blocking operations return concurrent.futures.Future objects.
        publication = sync_builder.publisher.submit_publish_many(
            (
                ResourceUpdate(POSITION, position, source="user-stream"),
                ResourceUpdate(OPEN_ORDERS, orders, source="user-stream"),
            )
        )
        invalidation = sync_builder.publisher.submit_invalidate(
            ACCOUNT,
            reason="stream-gap",
        )

        # Wait for operations accepted before this call when a synchronization point is
        # required.
        sync_builder.publisher.flush(timeout_seconds=1.0)
        publication.result()
        invalidation.result()

        snapshot = sync_builder.build([PRICE, POSITION, OPEN_ORDERS, ACCOUNT])
        assert snapshot.value(PRICE) == {"price": "65001.25"}
        assert snapshot.value(POSITION) == position
        assert snapshot.value(OPEN_ORDERS) == orders
        assert snapshot.value(ACCOUNT) == {"from": "rest"}
        assert set(publication.result()) == {POSITION, OPEN_ORDERS}
        assert invalidation.result() is None
        assert sync_builder.pending_submissions == 0
    assert sync_builder.closed
    assert builder.closed


def test_blocking_builds_and_requests(facade: SyncSnapshotBuilder, source: Source) -> None:
    snapshot = facade.build([key("a"), key("b")], snapshot_id="s1", metadata={"m": 1})
    assert snapshot.snapshot_id == "s1"
    assert snapshot.value(key("a")) == "value-a"

    source.values[key("bad")] = None
    request = SnapshotRequest(required=[key("a")], optional=[key("c")])
    assert facade.build_request(request).value(key("c")) == "value-c"
    assert source.calls.count(key("a")) == 1


def test_build_errors_surface_in_the_caller(facade: SyncSnapshotBuilder) -> None:
    with pytest.raises(TypeError, match="keys"):
        facade.build("not keys")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deadline_seconds"):
        facade.build([key("a")], deadline_seconds=-1.0)


def test_health_snapshot_adds_the_backlog(facade: SyncSnapshotBuilder) -> None:
    facade.build([key("a")])
    health = facade.health_snapshot()
    assert isinstance(health, BuilderHealth)
    assert health.pending_submissions == 0
    assert health.max_pending_submissions == facade.max_pending_submissions == 1024
    assert not health.closed


def test_wait_for_refreshes_returns(facade: SyncSnapshotBuilder) -> None:
    facade.wait_for_refreshes()


def test_sources_run_on_the_facades_loop_thread(
    facade: SyncSnapshotBuilder, source: Source
) -> None:
    facade.build([key("thread")])
    facade.session().resolve([key("other")])
    (loop_thread,) = facade_threads()
    assert source.threads == [loop_thread.name, loop_thread.name]
    assert loop_thread is not threading.current_thread()


# -- many threads --------------------------------------------------------------------------


def test_eight_threads_share_one_facade(facade: SyncSnapshotBuilder) -> None:
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            mine = [key(f"w{worker}-{i}") for i in range(5)]
            for round_ in range(20):
                snapshot = facade.build([*mine, key("shared")])
                assert snapshot.value(key("shared")) == "value-shared"
                published = key(f"pub-{worker}")
                result = facade.publisher.publish(published, round_, source=f"s{worker}")
                assert result.published or result.previous is not None
                future = facade.publisher.submit_publish(
                    key(f"sub-{worker}"), {"round": round_}, source=f"s{worker}", force=True
                )
                assert future.result(timeout=10).published
            facade.publisher.flush(timeout_seconds=10)
            final = facade.build([key(f"pub-{worker}"), key(f"sub-{worker}")])
            assert final.value(key(f"pub-{worker}")) == 19
            assert final.value(key(f"sub-{worker}")) == {"round": 19}
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    assert facade.pending_submissions == 0


# -- calls from inside an event loop -------------------------------------------------------


async def test_blocking_calls_refuse_a_running_loop(facade: SyncSnapshotBuilder) -> None:
    calls: list[Any] = [
        lambda: facade.build([key("a")]),
        lambda: facade.build_request(SnapshotRequest(required=[key("a")])),
        lambda: facade.session(),
        facade.health_snapshot,
        facade.wait_for_refreshes,
        facade.flush_submissions,
        lambda: facade.publisher.publish(key("a"), 1, source="s"),
        lambda: facade.publisher.flush(),
        facade.close,
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="running event loop"):
            call()
    assert not facade.closed
    # Non-blocking submissions are fine from a loop: they never wait.
    future = facade.publisher.submit_publish(key("a"), 1, source="s")
    await asyncio.wrap_future(future)


def test_blocking_calls_refuse_the_facades_own_loop_thread(
    facade: SyncSnapshotBuilder, source: Source
) -> None:
    source.on_fetch = lambda _key: facade.build([ResourceKey("other", "key")])
    with pytest.raises(SnapshotBuildError) as caught:
        facade.build([key("inner")])
    error = caught.value.errors[key("inner")]
    assert isinstance(error, ResourceResolutionError)
    assert "own event-loop thread" in error.failures[0].message


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_pending_submissions": 0}, ValueError, "max_pending_submissions"),
        ({"max_pending_submissions": 2.5}, TypeError, "max_pending_submissions"),
        ({"shutdown_timeout_seconds": -1.0}, ValueError, "shutdown_timeout_seconds"),
        ({"shutdown_timeout_seconds": math.nan}, ValueError, "shutdown_timeout_seconds"),
        ({"shutdown_timeout_seconds": math.inf}, ValueError, "shutdown_timeout_seconds"),
        ({"shutdown_timeout_seconds": "5"}, TypeError, "shutdown_timeout_seconds"),
        ({"close_builder": 1}, TypeError, "close_builder"),
    ],
)
def test_bad_arguments_are_refused_before_a_thread_starts(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    builder = SnapshotBuilder([Source()])
    before = len(facade_threads())
    with pytest.raises(error, match=name):
        SyncSnapshotBuilder(builder, **kwargs)
    assert len(facade_threads()) == before
    with SyncSnapshotBuilder(builder) as usable:  # the builder was not claimed
        assert usable.build([key("a")]).value(key("a")) == "value-a"


def test_a_non_builder_is_refused() -> None:
    with pytest.raises(TypeError, match="builder must be a SnapshotBuilder"):
        SyncSnapshotBuilder(object())  # type: ignore[arg-type]


def test_a_builder_serves_one_facade_only() -> None:
    builder = SnapshotBuilder([Source()])
    first = SyncSnapshotBuilder(builder, close_builder=False)
    with pytest.raises(ValueError, match="another SyncSnapshotBuilder"):
        SyncSnapshotBuilder(builder)
    first.close()
    with pytest.raises(ValueError, match="another SyncSnapshotBuilder"):
        SyncSnapshotBuilder(builder)


async def test_a_closed_builder_is_refused() -> None:
    builder = SnapshotBuilder([Source()])
    await builder.aclose()
    with pytest.raises(RuntimeError, match=r"^SnapshotBuilder is closed$"):
        SyncSnapshotBuilder(builder)


@pytest.mark.parametrize("timeout", [-0.5, math.nan, "1"])
def test_flush_refuses_bad_timeouts(facade: SyncSnapshotBuilder, timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timeout_seconds"):
        facade.flush_submissions(timeout_seconds=timeout)
    with pytest.raises((TypeError, ValueError), match="timeout_seconds"):
        facade.publisher.flush(timeout_seconds=timeout)
