"""Non-blocking submissions: the bounded backlog, argument capture, flush, futures."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest
from tests.sync.conftest import LONG, GatedCache, Hold, Source, frozen_loop, key

from coalestra.cache import PublishStatus, ResourceUpdate
from coalestra.core import (
    PayloadIsolationError,
    SourceProtocolError,
    SubmissionBacklogFullError,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.sync import SyncSnapshotBuilder


@pytest.fixture
def hold(cache: GatedCache) -> Hold:
    """Holds every cache write and invalidation (so every submission) until released."""
    cache.hold = Hold()
    return cache.hold


def test_a_full_backlog_refuses_at_once(cache: GatedCache) -> None:
    hold = cache.hold = Hold()
    builder = SnapshotBuilder([Source()], default_policy=LONG, cache=cache)
    with SyncSnapshotBuilder(builder, max_pending_submissions=3) as facade:
        publisher = facade.publisher
        accepted = [publisher.submit_invalidate(key(str(n))) for n in range(3)]
        hold.wait_entered(1)

        refused = []
        for submit in (
            lambda: publisher.submit_publish(key("x"), 1, source="s"),
            lambda: publisher.submit_publish_update(ResourceUpdate(key("x"), 1, source="s")),
            lambda: publisher.submit_publish_many([ResourceUpdate(key("x"), 1, source="s")]),
            lambda: publisher.submit_invalidate(key("x")),
            lambda: publisher.submit_invalidate_many([key("x")]),
        ):
            with pytest.raises(SubmissionBacklogFullError) as caught:
                submit()
            refused.append(caught.value)

        assert all((error.limit, error.pending) == (3, 3) for error in refused)
        assert facade.pending_submissions == publisher.pending_submissions == 3
        assert publisher.max_pending_submissions == 3
        health = facade.health_snapshot()
        assert (health.pending_submissions, health.max_pending_submissions) == (3, 3)
        assert not any(future.done() for future in accepted)

        hold.release()
        facade.flush_submissions(timeout_seconds=10)
        assert all(future.result() is None for future in accepted)
        assert facade.pending_submissions == 0
        # Room again once the backlog drained.
        assert publisher.submit_invalidate(key("x")).result(timeout=10) is None


def test_published_values_and_metadata_are_captured(
    facade: SyncSnapshotBuilder, source: Source
) -> None:
    value = {"price": "1.00", "levels": [1, 2]}
    metadata = {"sequence": {"id": 1}}
    with frozen_loop(facade, source):
        future = facade.publisher.submit_publish(
            key("p"), value, source="stream", metadata=metadata
        )
        value["price"] = "MUTATED"
        value["levels"].append(3)
        metadata["sequence"]["id"] = 99
        metadata["extra"] = True  # type: ignore[assignment]

    result = future.result(timeout=10)
    assert result.status is PublishStatus.PUBLISHED
    snapshot = facade.build([key("p")])
    assert snapshot.value(key("p")) == {"price": "1.00", "levels": [1, 2]}
    assert snapshot[key("p")].metadata == {"sequence": {"id": 1}, "published": True}


def test_update_collections_are_captured(facade: SyncSnapshotBuilder, source: Source) -> None:
    nested = {"qty": 1}
    updates = [ResourceUpdate(key("u1"), nested, source="s", metadata={"m": [1]})]
    with frozen_loop(facade, source):
        many = facade.publisher.submit_publish_many(updates)
        single = facade.publisher.submit_publish_update(
            ResourceUpdate(key("u2"), nested, source="s")
        )
        updates.append(ResourceUpdate(key("u3"), 3, source="s"))
        nested["qty"] = 666
        updates[0].metadata["m"].append(2)

    assert set(many.result(timeout=10)) == {key("u1")}
    assert single.result(timeout=10).published
    snapshot = facade.build([key("u1"), key("u2")])
    assert snapshot.value(key("u1")) == snapshot.value(key("u2")) == {"qty": 1}
    assert snapshot[key("u1")].metadata == {"m": [1], "published": True}
    assert facade.build([key("u3")]).value(key("u3")) == "value-u3"  # never published


def test_invalidation_keys_are_captured(facade: SyncSnapshotBuilder, source: Source) -> None:
    for name in ("a", "b"):
        facade.publisher.publish(key(name), name, source="s")
    keys = [key("a")]
    with frozen_loop(facade, source):
        future = facade.publisher.submit_invalidate_many(keys, reason="gap")
        keys.append(key("b"))
    future.result(timeout=10)

    snapshot = facade.build([key("a"), key("b")])
    assert snapshot.value(key("a")) == "value-a"  # invalidated: read from the source again
    assert snapshot.value(key("b")) == "b"  # still the published value


def test_uncopyable_values_are_refused_at_once(facade: SyncSnapshotBuilder) -> None:
    lock = threading.Lock()  # cannot be deep-copied
    with pytest.raises(PayloadIsolationError):
        facade.publisher.submit_publish(key("x"), lock, source="s")
    with pytest.raises(TypeError, match="metadata"):
        facade.publisher.submit_publish(key("x"), 1, source="s", metadata=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="updates"):
        facade.publisher.submit_publish_many(ResourceUpdate(key("x"), 1, source="s"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="updates item"):
        facade.publisher.submit_publish_many([{"key": key("x")}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="keys"):
        facade.publisher.submit_invalidate_many(key("x"))  # type: ignore[arg-type]
    assert facade.pending_submissions == 0


def test_operation_errors_surface_from_futures(facade: SyncSnapshotBuilder) -> None:
    empty_source = facade.publisher.submit_publish(key("x"), 1, source="")
    future_stamp = facade.publisher.submit_publish(key("x"), 1, source="s", observed_at=4e9)
    bad_key = facade.publisher.submit_invalidate("not a key")  # type: ignore[arg-type]

    assert isinstance(empty_source.exception(timeout=10), ValueError)
    assert isinstance(future_stamp.exception(timeout=10), SourceProtocolError)
    assert isinstance(bad_key.exception(timeout=10), TypeError)
    facade.flush_submissions(timeout_seconds=10)  # failures do not make flush raise
    assert facade.pending_submissions == 0


def test_flush_waits_for_accepted_work_and_times_out(
    facade: SyncSnapshotBuilder, hold: Hold
) -> None:
    future = facade.publisher.submit_publish(key("f"), 1, source="s")
    with pytest.raises(
        TimeoutError, match=r"^Timed out waiting for 1 non-blocking submission\(s\)$"
    ):
        facade.publisher.flush(timeout_seconds=0.01)
    assert not future.done()  # a flush timeout does not cancel anything

    releaser = threading.Timer(0.02, hold.release)
    releaser.start()
    facade.publisher.flush(timeout_seconds=10)
    assert future.done()
    assert future.result().published
    releaser.join()


def test_cancelling_a_future_cancels_the_work(facade: SyncSnapshotBuilder, hold: Hold) -> None:
    future = facade.publisher.submit_publish(key("c"), 1, source="s")
    hold.wait_entered()
    assert future.cancel()
    assert hold.cancelled.wait(timeout=10)
    assert facade.pending_submissions == 0
    hold.release()
    assert facade.build([key("c")]).value(key("c")) == "value-c"  # never published


def test_submissions_are_refused_after_close(builder: SnapshotBuilder) -> None:
    facade = SyncSnapshotBuilder(builder)
    publisher = facade.publisher
    facade.close()
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
        publisher.submit_publish(key("x"), 1, source="s")
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
        publisher.submit_invalidate(key("x"))
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
        publisher.flush(timeout_seconds=1)


def test_many_producers_never_exceed_the_limit(cache: GatedCache) -> None:
    hold = cache.hold = Hold()
    builder = SnapshotBuilder([Source()], default_policy=LONG, cache=cache)
    facade = SyncSnapshotBuilder(builder, max_pending_submissions=5)
    accepted: list[concurrent.futures.Future[Any]] = []
    refusals = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        for n in range(10):
            try:
                future = facade.publisher.submit_publish(key(f"{worker}-{n}"), n, source="s")
            except SubmissionBacklogFullError as error:
                with lock:
                    refusals.append(error)
            else:
                with lock:
                    accepted.append(future)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(accepted) == 5
    assert len(refusals) == 35
    assert all(error.pending == 5 for error in refusals)
    hold.release()
    facade.close()
    assert all(future.result().published for future in accepted)
