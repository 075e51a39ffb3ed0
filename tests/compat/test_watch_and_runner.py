"""Who cancelled us (``watch_cancellation``), and the loop runner, on every Python."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from coalestra import _compat
from coalestra._compat import CancelWatch, FallbackCancelWatch, FallbackRunner, fallback_timeout
from coalestra.testing import VirtualTimeLoop, VirtualTimeRunner

WATCHES: list[Callable[[Any], CancelWatch[Any]]] = [FallbackCancelWatch]
if sys.version_info >= (3, 11):
    WATCHES.append(CancelWatch)


@pytest.fixture(params=WATCHES, ids=lambda watch: watch.__name__)
def watch(request: pytest.FixtureRequest) -> Callable[[Any], CancelWatch[Any]]:
    return request.param  # type: ignore[no-any-return]


def test_the_package_watches_with_cancelling_where_it_can() -> None:
    watched = _compat.watch_cancellation(asyncio.sleep(0))
    expected = CancelWatch if sys.version_info >= (3, 11) else FallbackCancelWatch
    assert type(watched) is expected
    watched._awaitable.close()  # type: ignore[attr-defined]


async def test_a_watched_call_returns_its_value(
    watch: Callable[[Any], CancelWatch[Any]],
) -> None:
    async def work() -> str:
        await asyncio.sleep(1)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(1, future.set_result, "value")
        return await future

    assert await watch(work()) == "value"
    assert asyncio.get_running_loop().time() == 2.0


async def test_a_watched_call_raises_its_errors(watch: Callable[[Any], CancelWatch[Any]]) -> None:
    async def work() -> None:
        await asyncio.sleep(1)
        raise ValueError("its own")

    watched = watch(work())
    with pytest.raises(ValueError, match="its own"):
        await watched
    assert not watched.requested()


async def test_a_cancelled_error_raised_by_the_call_itself_is_not_a_request(
    watch: Callable[[Any], CancelWatch[Any]],
) -> None:
    async def work() -> None:
        await asyncio.sleep(1)
        raise asyncio.CancelledError  # nobody cancelled it

    watched = watch(work())
    with pytest.raises(asyncio.CancelledError):
        await watched
    assert not watched.requested()
    await asyncio.sleep(1)  # and this task is not cancelled


async def test_a_cancelled_error_from_a_future_cancelled_by_others_is_not_a_request(
    watch: Callable[[Any], CancelWatch[Any]],
) -> None:
    if watch is FallbackCancelWatch:
        pytest.xfail("3.10 cannot tell this from a cancellation of the task: it counts as one")
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_later(1, future.cancel)

    watched = watch(future)
    with pytest.raises(asyncio.CancelledError):
        await watched
    assert not watched.requested()


async def test_cancelling_the_awaiting_task_is_a_request(
    watch: Callable[[Any], CancelWatch[Any]],
) -> None:
    seen: list[bool] = []

    async def waits() -> None:
        watched = watch(asyncio.sleep(10))
        try:
            await watched
        except asyncio.CancelledError:
            seen.append(watched.requested())
            raise

    task = asyncio.get_running_loop().create_task(waits())
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert seen == [True]


async def test_a_deadline_firing_is_a_request(watch: Callable[[Any], CancelWatch[Any]]) -> None:
    scope = _compat.timeout(1) if watch is CancelWatch else fallback_timeout(1)
    watched = watch(asyncio.sleep(10))
    seen: list[bool] = []

    async def run() -> None:
        async with scope:
            try:
                await watched
            except asyncio.CancelledError:
                seen.append(watched.requested())
                raise

    with pytest.raises(TimeoutError):
        await run()
    assert seen == [True]


async def test_a_call_that_swallows_the_cancellation_returns_as_usual(
    watch: Callable[[Any], CancelWatch[Any]],
) -> None:
    results: list[str] = []

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    async def waits() -> None:
        results.append(await watch(stubborn()))

    task = asyncio.get_running_loop().create_task(waits())
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.wait([task])
    assert results == ["kept going"]


@pytest.mark.parametrize(
    ("cancels", "events", "ends_at"),
    [
        ([1.0], ["cleaned up", "caller done"], 3.0),
        ([1.0, 2.0], ["caller done"], 2.0),  # a second cancellation interrupts the cleanup
    ],
)
async def test_a_cancellation_reaches_the_call_and_waits_for_its_cleanup(
    watch: Callable[[Any], CancelWatch[Any]],
    cancels: list[float],
    events: list[str],
    ends_at: float,
) -> None:
    seen: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(2)
            seen.append("cleaned up")

    async def waits() -> None:
        try:
            await watch(slow_cleanup())
        finally:
            seen.append("caller done")

    loop = asyncio.get_running_loop()
    task = loop.create_task(waits())
    for at in cancels:
        loop.call_at(at, task.cancel)
    await asyncio.wait([task])
    assert task.cancelled()
    assert seen == events
    assert loop.time() == ends_at


# -- the runner ------------------------------------------------------------------------------

RUNNERS: list[Callable[..., Any]] = [FallbackRunner]
if sys.version_info >= (3, 11):
    RUNNERS.append(asyncio.Runner)


@pytest.fixture(params=RUNNERS, ids=lambda runner: runner.__name__)
def make_runner(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return request.param  # type: ignore[no-any-return]


def test_the_package_runs_with_asyncio_runner_where_there_is_one() -> None:
    expected = asyncio.Runner if sys.version_info >= (3, 11) else FallbackRunner
    assert _compat.Runner is expected


def test_a_runner_runs_several_coroutines_on_one_loop(make_runner: Callable[..., Any]) -> None:
    async def now() -> float:
        await asyncio.sleep(30)
        return asyncio.get_running_loop().time()

    with make_runner(loop_factory=VirtualTimeLoop) as runner:
        assert isinstance(runner.get_loop(), VirtualTimeLoop)
        assert runner.run(now()) == 30.0
        assert runner.run(now()) == 60.0
    late = now()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(late)
    late.close()


def test_closing_a_runner_cancels_what_is_left_and_finalizes(
    make_runner: Callable[..., Any],
) -> None:
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(1000)
        finally:
            events.append("background cancelled")

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            events.append("generator closed")

    async def start() -> None:
        asyncio.get_running_loop().create_task(background())
        generator = numbers()
        assert await generator.__anext__() == 1
        holder.append(generator)

    holder: list[Any] = []
    runner = make_runner(loop_factory=VirtualTimeLoop)
    runner.run(start())
    loop = runner.get_loop()
    runner.close()
    assert loop.is_closed()
    assert sorted(events) == ["background cancelled", "generator closed"]
    runner.close()  # idempotent


def test_a_runner_refuses_what_is_not_a_coroutine(make_runner: Callable[..., Any]) -> None:
    with (
        make_runner(loop_factory=VirtualTimeLoop) as runner,
        pytest.raises(ValueError, match="coroutine was expected"),
    ):
        runner.run(asyncio.sleep)


async def test_a_runner_refuses_to_run_inside_a_running_loop(
    make_runner: Callable[..., Any],
) -> None:
    runner = make_runner(loop_factory=VirtualTimeLoop)
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        runner.run(coro)
    coro.close()
    runner.close()


def test_a_runner_without_a_factory_makes_a_default_loop(make_runner: Callable[..., Any]) -> None:
    async def running() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    with make_runner() as runner:
        assert runner.run(running()) is runner.get_loop()


def test_a_runner_runs_in_a_copy_of_the_callers_context(make_runner: Callable[..., Any]) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")

    async def read() -> str:
        return var.get()

    async def write() -> None:
        var.set("changed inside")

    with make_runner(loop_factory=VirtualTimeLoop) as runner:
        assert runner.run(read()) == "caller"
        runner.run(write())
    assert var.get() == "caller"  # never leaks out


def test_the_virtual_time_runner_runs_on_one_virtual_loop() -> None:
    async def later(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return asyncio.get_running_loop().time()

    with VirtualTimeRunner(start=100.0) as runner:
        assert isinstance(runner.get_loop(), VirtualTimeLoop)
        assert runner.run(later(3600)) == 3700.0
        assert runner.run(later(60)) == 3760.0  # the same loop, the same clock
        loop = runner.get_loop()
    assert loop.is_closed()
    runner.close()  # idempotent
