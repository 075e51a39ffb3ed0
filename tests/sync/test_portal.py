"""The facade's portal (a private unit, tested directly): waits, timeouts, cancellation, stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from coalestra._sync._portal import LoopPortal


@pytest.fixture
def portal() -> Iterator[LoopPortal]:
    started = LoopPortal()
    yield started
    started.stop()


async def blocked(cancelled: threading.Event, entered: threading.Event) -> None:
    entered.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.set()
        raise


async def identify() -> threading.Thread:
    return threading.current_thread()


async def fail(error: BaseException) -> None:
    raise error


def test_calls_run_on_the_portals_thread(portal: LoopPortal) -> None:
    assert portal.call(identify) is portal.thread
    assert portal.thread.daemon


def test_exceptions_reach_the_caller(portal: LoopPortal) -> None:
    with pytest.raises(KeyError, match="boom"):
        portal.call(fail, KeyError("boom"))
    # A TimeoutError raised by the work itself is not mistaken for the wait's timeout.
    with pytest.raises(TimeoutError, match="its own"):
        portal.call_within(30.0, fail, TimeoutError("its own"))


def test_a_caller_timeout_cancels_the_work(portal: LoopPortal) -> None:
    cancelled, entered = threading.Event(), threading.Event()
    with pytest.raises(TimeoutError, match="cancelled"):
        portal.call_within(0.01, blocked, cancelled, entered)
    assert entered.is_set()
    assert cancelled.wait(timeout=10)


def test_an_interrupted_wait_cancels_the_work(portal: LoopPortal) -> None:
    cancelled, entered = threading.Event(), threading.Event()
    future = portal.start(blocked, cancelled, entered)
    assert entered.wait(timeout=10)

    class Interrupted(BaseException):
        pass

    original = future.result

    def interrupted(timeout: float | None = None) -> None:
        raise Interrupted  # as KeyboardInterrupt would, while waiting

    future.result = interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        portal.result(future)
    future.result = original  # type: ignore[method-assign]
    assert cancelled.wait(timeout=10)
    assert future.cancelled()


def test_stop_releases_waiters_and_refuses_new_work() -> None:
    portal = LoopPortal()
    cancelled, entered = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            portal.call(blocked, cancelled, entered)
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert entered.wait(timeout=10)
    portal.stop()
    waiter.join(timeout=10)

    assert [str(error) for error in outcome] == ["SyncSnapshotBuilder is closed"]
    assert isinstance(outcome[0], RuntimeError)
    assert cancelled.is_set()
    assert not portal.thread.is_alive()
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotBuilder is closed$"):
        portal.start(identify)
    portal.stop()  # idempotent


async def test_blocking_from_a_running_loop_is_refused(portal: LoopPortal) -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        portal.call(identify)
    assert await asyncio.wrap_future(portal.start(identify)) is portal.thread
