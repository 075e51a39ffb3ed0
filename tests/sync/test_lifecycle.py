"""Closing the facade: order, idempotence, the loop thread, refreshes, exit and collection."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest
from tests.sync.conftest import LONG, GatedCache, Hold, Source, facade_threads, key

from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SessionClosedError,
    SnapshotBuildError,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.sync import SyncSnapshotBuilder


def test_close_stops_and_joins_the_loop_thread(builder: SnapshotBuilder) -> None:
    before = set(facade_threads())
    facade = SyncSnapshotBuilder(builder)
    (thread,) = set(facade_threads()) - before
    assert thread.daemon
    facade.build([key("a")])

    facade.close()

    assert not thread.is_alive()
    assert thread not in threading.enumerate()
    assert facade.closed
    assert builder.closed
    facade.close()  # idempotent


def test_every_method_raises_after_close(builder: SnapshotBuilder) -> None:
    facade = SyncSnapshotBuilder(builder)
    session = facade.session()
    facade.close()
    for call in (
        lambda: facade.build([key("a")]),
        lambda: facade.session(),
        facade.health_snapshot,
        facade.wait_for_refreshes,
        lambda: facade.publisher.publish(key("a"), 1, source="s"),
        lambda: facade.publisher.invalidate(key("a")),
        lambda: session.resolve([key("a")]),
        session.snapshot,
        facade.__enter__,
    ):
        with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
            call()
    assert session.closed
    session.close()  # a no-op once the facade is closed


def test_close_builder_false_leaves_the_builder_open(builder: SnapshotBuilder) -> None:
    with SyncSnapshotBuilder(builder, close_builder=False) as facade:
        facade.build([key("a")])
    assert facade.closed
    assert not builder.closed


def test_concurrent_closes_all_return_after_shutdown(builder: SnapshotBuilder) -> None:
    facade = SyncSnapshotBuilder(builder)
    (thread,) = [t for t in facade_threads() if t.is_alive()][-1:]
    closers = [threading.Thread(target=facade.close) for _ in range(4)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=30)
    assert not any(closer.is_alive() for closer in closers)
    assert not thread.is_alive()


def test_close_drains_accepted_submissions(cache: GatedCache) -> None:
    hold = cache.hold = Hold()
    builder = SnapshotBuilder([Source()], default_policy=LONG, cache=cache)
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=30.0)
    futures = [facade.publisher.submit_publish(key(str(n)), n, source="s") for n in range(3)]
    releaser = threading.Timer(0.02, hold.release)
    releaser.start()

    facade.close()

    assert all(future.result(timeout=0).published for future in futures)
    releaser.join()


def test_close_cancels_what_does_not_finish_in_time(cache: GatedCache) -> None:
    hold = cache.hold = Hold()
    seen_at_builder_close: list[bool] = []

    class Events:
        def emit(self, event_type: str, **payload: object) -> None:
            pass

        def close(self) -> None:  # runs inside builder.aclose() (manage_lifecycle=True)
            seen_at_builder_close.append(hold.cancelled.is_set())

    builder = SnapshotBuilder(
        [Source()], default_policy=LONG, cache=cache, events=Events(), manage_lifecycle=True
    )
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.01)
    future = facade.publisher.submit_publish(key("slow"), 1, source="s")
    hold.wait_entered()

    facade.close()

    assert future.cancelled()
    assert hold.cancelled.is_set()  # the coroutine itself was cancelled on the loop
    assert seen_at_builder_close == [True]  # ... before the builder was closed
    assert builder.closed
    assert facade.pending_submissions == 0


def test_a_caller_blocked_during_close_is_released(
    source: Source, builder: SnapshotBuilder
) -> None:
    source.hold = Hold()
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.01)
    outcome: list[BaseException] = []

    def blocked_build() -> None:
        try:
            facade.build([key("stuck")])
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=blocked_build)
    caller.start()
    source.hold.wait_entered()
    facade.close()
    caller.join(timeout=30)
    assert not caller.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], (SessionClosedError, SnapshotBuildError))


class Refreshing:
    """A source whose second and later fetches of a key (background refreshes) take
    ``refresh_seconds``; ``refreshed`` is set when one completes."""

    name = "slow"
    priority = 10

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self.calls: list[ResourceKey] = []
        self.refreshed = threading.Event()

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> int:
        self.calls.append(key)
        if len(self.calls) > 1:
            await asyncio.sleep(self.refresh_seconds)
            self.refreshed.set()
        return len(self.calls)


SWR = FreshnessPolicy(
    ttl_seconds=0.001, max_stale_seconds=3600.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
)


def start_a_refresh(facade: SyncSnapshotBuilder) -> None:
    facade.build([key("r")])
    threading.Event().wait(0.01)  # past the TTL: the next build serves stale and refreshes
    assert facade.build([key("r")]).value(key("r")) == 1
    assert facade.health_snapshot().background_refreshes == 1


@pytest.mark.parametrize("close_builder", [True, False])
def test_close_waits_for_pending_refreshes(close_builder: bool) -> None:
    source = Refreshing(refresh_seconds=0.05)
    builder = SnapshotBuilder([source], default_policy=SWR)
    facade = SyncSnapshotBuilder(
        builder, close_builder=close_builder, shutdown_timeout_seconds=30.0
    )
    start_a_refresh(facade)

    facade.close()

    assert source.refreshed.is_set()
    assert len(source.calls) == 2
    assert builder.closed is close_builder


def test_close_bounds_the_wait_for_refreshes() -> None:
    source = Refreshing(refresh_seconds=3600.0)
    builder = SnapshotBuilder([source], default_policy=SWR)
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=0.01)
    start_a_refresh(facade)

    facade.close()  # returns: the refresh is cancelled after the shutdown timeout

    assert not source.refreshed.is_set()
    assert builder.closed


def test_wait_for_refreshes_blocks_until_done() -> None:
    done = threading.Event()

    class Slow:
        name = "slow"
        priority = 10

        def supports(self, key: ResourceKey) -> bool:
            return True

        async def fetch(self, key: ResourceKey, context: FetchContext) -> str:
            if key.subject == "again":
                await asyncio.sleep(0.02)
                done.set()
            return key.subject

    swr = FreshnessPolicy(0.001, 3600.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE)
    with SyncSnapshotBuilder(SnapshotBuilder([Slow()], default_policy=swr)) as facade:
        facade.publisher.publish(key("again"), "published", source="s")
        threading.Event().wait(0.01)
        assert facade.build([key("again")]).value(key("again")) == "published"
        facade.wait_for_refreshes()
        assert done.is_set()


def test_an_unreferenced_facade_is_closed_when_collected(builder: SnapshotBuilder) -> None:
    before = set(facade_threads())
    facade = SyncSnapshotBuilder(builder)
    (thread,) = set(facade_threads()) - before
    facade.build([key("a")])
    reference = weakref.ref(facade)
    del facade
    gc.collect()
    assert reference() is None
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert builder.closed


def test_process_exit_with_an_open_facade_does_not_hang() -> None:
    script = textwrap.dedent(
        """
        from coalestra.cache import ResourceUpdate
        from coalestra.core import ResourceKey
        from coalestra.orchestration import SnapshotBuilder
        from coalestra.sync import SyncSnapshotBuilder

        class Source:
            name = "rest"
            priority = 10
            def supports(self, key):
                return True
            async def fetch(self, key, context):
                return key.subject

        class Events:
            # Closed by the builder's aclose() (manage_lifecycle=True): proof the facade
            # closed the builder on the way out.
            def emit(self, event_type, **payload):
                pass
            def close(self):
                print("builder closed its sinks", flush=True)

        builder = SnapshotBuilder([Source()], events=Events(), manage_lifecycle=True)
        facade = SyncSnapshotBuilder(builder)
        print(facade.build([ResourceKey("a", "b", "c")]).value(ResourceKey("a", "b", "c")))
        facade.publisher.submit_publish_many([ResourceUpdate(ResourceKey("x", "y"), 1, source="s")])
        session = facade.session()
        session.resolve([ResourceKey("a", "b", "d")])
        print("leaving without close", flush=True)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines == ["c", "leaving without close", "builder closed its sinks"]
    assert "Traceback" not in completed.stderr
