"""The task group Coalestra uses on every Python: asyncio's own on 3.11+, ours on 3.10.

Every test runs against each implementation the running Python has (ours always, so 3.11+
checks it too): both must behave the same.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from coalestra import _compat
from coalestra._compat import BaseExceptionGroup, ExceptionGroup, FallbackTaskGroup
from coalestra.testing import VirtualTimeLoop

GROUPS: list[Callable[[], Any]] = [FallbackTaskGroup]
if sys.version_info >= (3, 11):
    GROUPS.append(asyncio.TaskGroup)


@pytest.fixture(params=GROUPS, ids=lambda group: f"{group.__module__}.{group.__name__}")
def make_group(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return request.param  # type: ignore[no-any-return]


def test_the_package_uses_the_standard_group_where_there_is_one() -> None:
    expected = FallbackTaskGroup if sys.version_info < (3, 11) else asyncio.TaskGroup
    assert _compat.TaskGroup is expected


async def test_the_group_waits_for_every_task(make_group: Callable[[], Any]) -> None:
    finished: list[float] = []
    loop = asyncio.get_running_loop()

    async def work(seconds: float) -> float:
        await asyncio.sleep(seconds)
        finished.append(loop.time())
        return seconds

    async with make_group() as group:
        tasks = [group.create_task(work(s)) for s in (3.0, 1.0, 2.0)]

    assert [task.result() for task in tasks] == [3.0, 1.0, 2.0]
    assert finished == [1.0, 2.0, 3.0]


async def test_the_first_error_cancels_the_other_tasks(make_group: Callable[[], Any]) -> None:
    cancelled: list[str] = []

    async def slow(name: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def fail() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    loop = asyncio.get_running_loop()

    async def _body() -> None:
        async with make_group() as group:
            group.create_task(slow("a"))
            group.create_task(fail())
            group.create_task(slow("b"))

    with pytest.raises(ExceptionGroup) as caught:
        await _body()

    assert [type(e) for e in caught.value.exceptions] == [ValueError]
    assert str(caught.value.exceptions[0]) == "boom"
    assert sorted(cancelled) == ["a", "b"]
    assert loop.time() == 1.0


async def test_an_error_interrupts_the_body_and_leaves_the_task_uncancelled(
    make_group: Callable[[], Any],
) -> None:
    body_interrupted = False

    async def fail() -> None:
        await asyncio.sleep(1)
        raise KeyError("k")

    async def _body() -> None:
        nonlocal body_interrupted
        async with make_group() as group:
            group.create_task(fail())
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                body_interrupted = True
                raise

    with pytest.raises(ExceptionGroup):
        await _body()

    assert body_interrupted
    # The group took its own cancellation back: this task goes on as usual.
    await asyncio.sleep(5)
    assert asyncio.get_running_loop().time() == 6.0
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0


async def test_every_error_is_reported_in_order(make_group: Callable[[], Any]) -> None:
    async def fail(error: Exception) -> None:
        raise error

    async def _body() -> None:
        async with make_group() as group:
            group.create_task(fail(ValueError("one")))
            group.create_task(fail(TypeError("two")))

    with pytest.raises(ExceptionGroup) as caught:
        await _body()

    assert [str(e) for e in caught.value.exceptions] == ["one", "two"]


async def test_an_error_in_the_body_cancels_the_tasks_and_joins_the_group(
    make_group: Callable[[], Any],
) -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def _body() -> None:
        async with make_group() as group:
            group.create_task(slow())
            await asyncio.sleep(0)
            raise RuntimeError("body")

    with pytest.raises(ExceptionGroup) as caught:
        await _body()

    assert [str(e) for e in caught.value.exceptions] == ["body"]
    assert cancelled.is_set()


@pytest.mark.parametrize("make_group", GROUPS)
def test_keyboard_interrupt_propagates_as_it_is(make_group: Callable[[], Any]) -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    async def owner() -> None:
        async with make_group() as group:
            group.create_task(asyncio.sleep(10))
            group.create_task(interrupt())

    with _compat.Runner(loop_factory=VirtualTimeLoop) as runner:
        main = runner.get_loop().create_task(owner())
        with pytest.raises(KeyboardInterrupt):  # out of the loop, from the task that raised
            runner.run(asyncio.wait([main]))
        for _ in range(5):  # the group raises it again from its owner: let it
            try:
                runner.run(asyncio.wait([main]))
                break
            except KeyboardInterrupt:
                continue
        assert type(main.exception()) is KeyboardInterrupt  # not inside a group


async def test_a_task_that_cancels_itself_is_no_error(make_group: Callable[[], Any]) -> None:
    async def gives_up() -> None:
        raise asyncio.CancelledError

    async def works() -> str:
        await asyncio.sleep(1)
        return "done"

    async with make_group() as group:
        group.create_task(gives_up())
        worker = group.create_task(works())

    assert worker.result() == "done"


# -- cancellation from outside is never lost -------------------------------------------------


async def _start(coro: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    await asyncio.sleep(0)
    return task


async def test_cancelling_the_body_cancels_the_tasks_and_propagates(
    make_group: Callable[[], Any],
) -> None:
    seen: list[str] = []

    async def child() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("child")
            raise

    async def owner() -> None:
        async with make_group() as group:
            group.create_task(child())
            await asyncio.sleep(10)  # cancelled here
        seen.append("after the group")  # never reached

    task = await _start(owner())
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.wait([task])

    assert task.cancelled()
    assert seen == ["child"]


async def test_cancelling_while_the_group_waits_for_its_tasks_propagates(
    make_group: Callable[[], Any],
) -> None:
    async def owner() -> None:
        async with make_group() as group:
            group.create_task(asyncio.sleep(10))
        # waiting in __aexit__ when cancelled

    task = await _start(owner())
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_a_cancellation_at_the_same_time_as_an_error_is_not_lost(
    make_group: Callable[[], Any],
) -> None:
    """A child fails and, in the same loop iteration, somebody cancels the owner first."""
    loop = asyncio.get_running_loop()

    async def fail() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    async def owner() -> None:
        async with make_group() as group:
            group.create_task(fail())
            await asyncio.sleep(10)

    task = loop.create_task(owner())
    loop.call_at(1.0, task.cancel)  # scheduled before the child's timer: runs first
    await asyncio.wait([task])

    # asyncio raises the child's error (errors win) or CancelledError; never a silent success.
    if task.cancelled():
        return
    error = task.exception()
    assert isinstance(error, ExceptionGroup)


async def test_a_cancellation_while_a_failed_group_cleans_up_is_delivered_again(
    make_group: Callable[[], Any],
) -> None:
    if make_group is not FallbackTaskGroup and sys.version_info < (3, 13):
        pytest.skip("asyncio re-delivers it since 3.13 only")
    loop = asyncio.get_running_loop()

    async def fail() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # cleanup takes a second
            raise

    async def owner() -> str:
        try:
            async with make_group() as group:
                group.create_task(fail())
                group.create_task(slow_to_stop())
        except ExceptionGroup:
            pass
        await asyncio.sleep(10)  # the outside cancellation lands here
        return "not cancelled"

    task = loop.create_task(owner())
    loop.call_at(1.5, task.cancel)
    await asyncio.wait([task])
    assert task.cancelled()


# -- nesting ---------------------------------------------------------------------------------


async def test_nested_groups_report_inner_errors_inside_outer_ones(
    make_group: Callable[[], Any],
) -> None:
    async def fail() -> None:
        await asyncio.sleep(1)
        raise ValueError("inner")

    async def _body() -> None:
        async with make_group() as outer:
            outer.create_task(asyncio.sleep(5))
            async with make_group() as inner:
                inner.create_task(fail())

    with pytest.raises(ExceptionGroup) as caught:
        await _body()

    (nested,) = caught.value.exceptions
    assert isinstance(nested, ExceptionGroup)
    assert [str(e) for e in nested.exceptions] == ["inner"]
    assert asyncio.get_running_loop().time() == 1.0


async def test_an_outer_error_stops_an_inner_group_and_wins(
    make_group: Callable[[], Any],
) -> None:
    inner_children_cancelled = 0

    async def inner_child() -> None:
        nonlocal inner_children_cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            inner_children_cancelled += 1
            raise

    async def fail() -> None:
        await asyncio.sleep(1)
        raise ValueError("outer")

    async def _body() -> None:
        async with make_group() as outer:
            outer.create_task(fail())
            async with make_group() as inner:
                inner.create_task(inner_child())
                inner.create_task(inner_child())

    with pytest.raises(ExceptionGroup) as caught:
        await _body()

    assert [str(e) for e in caught.value.exceptions] == ["outer"]
    assert inner_children_cancelled == 2
    await asyncio.sleep(1)  # and this task is not left cancelled


async def test_an_inner_error_caught_in_the_body_does_not_disturb_the_outer_group(
    make_group: Callable[[], Any],
) -> None:
    async def fail() -> None:
        raise ValueError("inner")

    async with make_group() as outer:
        sibling = outer.create_task(asyncio.sleep(2, result="sibling"))
        caught: list[str] = []
        try:
            async with make_group() as inner:
                inner.create_task(fail())
        except ExceptionGroup as errors:
            caught = [str(e) for e in errors.exceptions]
        assert caught == ["inner"]
        await asyncio.sleep(1)

    assert sibling.result() == "sibling"


# -- misuse ----------------------------------------------------------------------------------


async def test_tasks_cannot_be_added_once_the_group_is_done(
    make_group: Callable[[], Any],
) -> None:
    async with make_group() as group:
        pass
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        group.create_task(coro)
    coro.close()  # asyncio before 3.13 leaves it to the caller


async def test_tasks_cannot_be_added_while_the_group_shuts_down(
    make_group: Callable[[], Any],
) -> None:
    refused: list[str] = []

    async def fail() -> None:
        raise ValueError("boom")

    async def _body() -> None:
        async with make_group() as group:
            group.create_task(fail())
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                coro = asyncio.sleep(0)
                try:
                    group.create_task(coro)
                except RuntimeError as error:
                    refused.append(str(error))
                coro.close()
                raise

    with pytest.raises(ExceptionGroup):
        await _body()

    assert len(refused) == 1
    assert "shutting down" in refused[0]


async def test_our_group_closes_a_refused_coroutine() -> None:
    async with FallbackTaskGroup() as group:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="finished"):
            group.create_task(asyncio.sleep(0))
        gc.collect()  # a coroutine never awaited (nor closed) would warn here


async def test_a_group_is_entered_once(make_group: Callable[[], Any]) -> None:
    group = make_group()
    async with group:
        with pytest.raises(RuntimeError):
            await group.__aenter__()


def test_the_fallback_groups_are_exception_groups_where_they_can_be() -> None:
    errors: list[BaseException] = [ValueError("v")]
    assert isinstance(_compat._group_of(errors), ExceptionGroup)
    mixed: list[BaseException] = [ValueError("v"), KeyboardInterrupt()]
    group = _compat._group_of(mixed)
    assert isinstance(group, BaseExceptionGroup)
    assert not isinstance(group, Exception)
    assert list(group.exceptions) == mixed
