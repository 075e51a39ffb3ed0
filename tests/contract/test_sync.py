"""Contract: the synchronous facade and its submissions (B-SYNC-1 ... B-SYNC-6).

These run in real time (the facade owns a real loop thread); every wait is tiny or bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.sync.conftest import GatedCache

from coalestra import (
    BuilderHealth,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    PublishResult,
    PublishStatus,
    ResourceKey,
    ResourceUpdate,
    SnapshotBuilder,
    SourceProtocolError,
    SubmissionBacklogFullError,
    SyncSnapshotBuilder,
)

A = ResourceKey("test", "value", "A")
POLICY = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


def key(subject: str) -> ResourceKey:
    return ResourceKey("test", "value", subject)


async def fetch(key: ResourceKey, context: FetchContext) -> str:
    return f"value-{key.subject}"


class BlockedCache(GatedCache):
    """An AsyncMemoryCache whose batch writes and invalidations wait while ``blocked``."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Semaphore(0)

    def block(self) -> None:
        self.released.clear()

    async def _gate(self) -> None:
        self.entered.release()
        while not self.released.is_set():  # noqa: ASYNC110 (set from another thread)
            await asyncio.sleep(0.001)


def make_builder(**options: Any) -> SnapshotBuilder:
    source = CallableSource(name="rest", priority=1, supports=lambda _key: True, fetcher=fetch)
    return SnapshotBuilder([source], default_policy=POLICY, **options)


@pytest.fixture
def cache() -> BlockedCache:
    return BlockedCache()


@pytest.fixture
def facade(cache: BlockedCache) -> Iterator[SyncSnapshotBuilder]:
    sync = SyncSnapshotBuilder(make_builder(cache=cache), shutdown_timeout_seconds=2.0)
    yield sync
    cache.released.set()
    sync.close()


# -- B-SYNC-1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, 0.0, -1.0])
def test_b_sync_1_shutdown_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^shutdown_timeout_seconds must be positive$"):
        SyncSnapshotBuilder(make_builder(), shutdown_timeout_seconds=timeout)


@pytest.mark.parametrize("limit", [0, -3])
def test_b_sync_1_max_pending_submissions_must_be_at_least_1(limit: int) -> None:
    with pytest.raises(ValueError, match=r"^max_pending_submissions must be at least 1$"):
        SyncSnapshotBuilder(make_builder(), max_pending_submissions=limit)


def test_b_sync_1_builder_and_publisher_attributes(cache: BlockedCache) -> None:
    builder = make_builder(cache=cache)
    with SyncSnapshotBuilder(builder) as facade:
        assert facade.builder is builder
        result = facade.publisher.publish(A, "pushed", source="stream")
        assert result.status is PublishStatus.PUBLISHED
        # It wrapped builder.publisher: the value is in the builder's cache, builds see it.
        assert facade.build([A]).value(A) == "pushed"


# -- B-SYNC-2 -----------------------------------------------------------------------------------


def test_b_sync_2_submissions_run_on_the_loop_thread_through_publish_update(
    facade: SyncSnapshotBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = type(facade.builder.publisher)
    threads: list[str] = []
    original = publisher.publish_update

    async def spy(self: Any, update: ResourceUpdate[Any], **options: Any) -> PublishResult:
        threads.append(threading.current_thread().name)
        return await original(self, update, **options)

    monkeypatch.setattr(publisher, "publish_update", spy)
    facade.publisher.submit_publish(A, 1, source="stream").result(timeout=10)
    facade.publisher.submit_publish_update(ResourceUpdate(A, 2, source="stream")).result(10)
    assert len(threads) == 2
    assert all(name.startswith("coalestra-sync-") for name in threads)
    assert threading.current_thread().name not in threads


def test_b_sync_2_the_payload_is_captured_before_submit_returns(
    facade: SyncSnapshotBuilder, cache: BlockedCache
) -> None:
    cache.block()
    payload = {"rows": [1, 2]}
    metadata = {"tags": ["a"]}
    future = facade.publisher.submit_publish(A, payload, source="stream", metadata=metadata)
    payload["rows"].append(3)
    metadata["tags"].append("b")
    updates = [ResourceUpdate(key("m"), {"n": 1}, source="stream")]
    many = facade.publisher.submit_publish_many(updates)
    updates.append(ResourceUpdate(key("late"), {"n": 2}, source="stream"))
    cache.released.set()
    result = future.result(timeout=10)
    assert result.value.value == {"rows": [1, 2]}
    assert result.value.metadata["tags"] == ["a"]
    assert set(many.result(timeout=10)) == {key("m")}
    assert facade.build([A]).value(A) == {"rows": [1, 2]}


def test_b_sync_2_the_builders_copier_captures_the_payload(cache: BlockedCache) -> None:
    copied_on: list[str] = []

    def copier(value: Any) -> Any:
        copied_on.append(threading.current_thread().name)
        return copy.deepcopy(value)

    builder = make_builder(cache=cache, payload_copier=copier)
    with SyncSnapshotBuilder(builder) as facade:
        future = facade.publisher.submit_publish(A, {"n": 1}, source="stream")
        assert threading.current_thread().name in copied_on  # copied before submit returned
        future.result(timeout=10)


def test_b_sync_2_a_blocked_cache_write_keeps_the_submission_pending(
    facade: SyncSnapshotBuilder, cache: BlockedCache
) -> None:
    cache.block()
    future = facade.publisher.submit_publish(A, 1, source="stream")
    assert cache.entered.acquire(timeout=10)
    assert not future.done()
    assert facade.pending_submissions == 1
    cache.released.set()
    assert future.result(timeout=10).status is PublishStatus.PUBLISHED


# -- B-SYNC-3 -----------------------------------------------------------------------------------


def test_b_sync_3_a_full_backlog_refuses_at_once(cache: BlockedCache) -> None:
    cache.block()
    with SyncSnapshotBuilder(make_builder(cache=cache), max_pending_submissions=2) as facade:
        accepted = [facade.publisher.submit_invalidate(key(str(n))) for n in range(2)]
        with pytest.raises(SubmissionBacklogFullError) as caught:
            facade.publisher.submit_publish(A, 1, source="stream")
        assert (caught.value.limit, caught.value.pending) == (2, 2)
        assert facade.pending_submissions == facade.publisher.pending_submissions == 2
        cache.released.set()
        for future in accepted:
            assert isinstance(future, concurrent.futures.Future)
            assert future.result(timeout=10) is None
        facade.flush_submissions(timeout_seconds=10)
        assert facade.pending_submissions == 0


def test_b_sync_3_the_limit_holds_across_racing_threads(cache: BlockedCache) -> None:
    cache.block()
    with SyncSnapshotBuilder(make_builder(cache=cache), max_pending_submissions=3) as facade:
        start = threading.Barrier(20)
        accepted: list[concurrent.futures.Future[Any]] = []
        refused: list[SubmissionBacklogFullError] = []
        lock = threading.Lock()

        def produce(n: int) -> None:
            start.wait()
            try:
                future = facade.publisher.submit_publish(key(str(n)), n, source="stream")
            except SubmissionBacklogFullError as error:
                with lock:
                    refused.append(error)
            else:
                with lock:
                    accepted.append(future)

        producers = [threading.Thread(target=produce, args=(n,)) for n in range(20)]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join(10)
        assert (len(accepted), len(refused)) == (3, 17)
        cache.released.set()
        facade.flush_submissions(timeout_seconds=10)


def test_b_sync_3_a_future_carries_the_original_exception_and_leaves_the_backlog(
    facade: SyncSnapshotBuilder,
) -> None:
    future = facade.publisher.submit_publish(
        A,
        1,
        source="stream",
        observed_at=4_000_000_000.0,  # far in the future
    )
    error = future.exception(timeout=10)
    assert isinstance(error, SourceProtocolError)
    facade.flush_submissions(timeout_seconds=10)
    assert facade.pending_submissions == 0


# -- B-SYNC-4 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_b_sync_4_flush_timeout_must_be_positive(
    facade: SyncSnapshotBuilder, timeout: float
) -> None:
    with pytest.raises(ValueError, match=r"^timeout_seconds must be positive$"):
        facade.flush_submissions(timeout_seconds=timeout)
    with pytest.raises(ValueError, match=r"^timeout_seconds must be positive$"):
        facade.publisher.flush(timeout_seconds=timeout)


def test_b_sync_4_a_flush_timeout_raises_and_cancels_nothing(
    facade: SyncSnapshotBuilder, cache: BlockedCache
) -> None:
    cache.block()
    futures = [facade.publisher.submit_invalidate(key(str(n))) for n in range(2)]
    message = r"^Timed out waiting for 2 non-blocking submission\(s\)$"
    with pytest.raises(TimeoutError, match=message):
        facade.flush_submissions(timeout_seconds=0.01)
    with pytest.raises(TimeoutError, match=message):
        facade.publisher.flush(timeout_seconds=0.01)
    assert not any(future.cancelled() or future.done() for future in futures)
    cache.released.set()
    facade.publisher.flush(timeout_seconds=10)
    assert all(future.done() and not future.cancelled() for future in futures)


# -- B-SYNC-5 -----------------------------------------------------------------------------------


def test_b_sync_5_close_drains_then_closes_the_builder(cache: BlockedCache) -> None:
    builder = make_builder(cache=cache)
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=5.0)
    cache.block()
    future = facade.publisher.submit_publish(A, 1, source="stream")
    assert cache.entered.acquire(timeout=10)
    threading.Timer(0.05, cache.released.set).start()
    facade.close()  # blocks while the accepted submission runs
    assert future.done()
    assert not future.cancelled()
    assert future.result().status is PublishStatus.PUBLISHED
    assert facade.closed
    assert builder.closed
    facade.close()  # idempotent


def test_b_sync_5_close_cancels_what_outlives_the_timeout(cache: BlockedCache) -> None:
    builder = make_builder(cache=cache)
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.05)
    cache.block()
    future = facade.publisher.submit_invalidate(A)
    assert cache.entered.acquire(timeout=10)
    facade.close()
    assert future.cancelled()
    assert builder.closed
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
        facade.publisher.submit_invalidate(A)


def test_b_sync_5_close_builder_false_keeps_the_builder_open() -> None:
    builder = make_builder()
    facade = SyncSnapshotBuilder(builder, close_builder=False)
    facade.build([A])
    facade.close()
    assert facade.closed
    assert not builder.closed


# -- B-SYNC-6 -----------------------------------------------------------------------------------


def test_b_sync_6_health_adds_the_submission_backlog(
    facade: SyncSnapshotBuilder, cache: BlockedCache
) -> None:
    cache.block()
    facade.publisher.submit_invalidate(A)
    assert cache.entered.acquire(timeout=10)
    health = facade.health_snapshot()
    assert isinstance(health, BuilderHealth)
    assert (health.pending_submissions, health.max_pending_submissions) == (1, 1024)
    assert health.closed is False
    cache.released.set()
