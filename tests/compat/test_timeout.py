"""The deadline scope Coalestra uses on every Python: ``asyncio.timeout`` on 3.11+, ours on
3.10. Every test runs against each implementation the running Python has (ours always)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

from coalestra import _compat
from coalestra._compat import FallbackTaskGroup, fallback_timeout, fallback_timeout_at

SCOPES: list[tuple[Callable[[float | None], Any], Callable[[float | None], Any]]] = [
    (fallback_timeout, fallback_timeout_at)
]
if sys.version_info >= (3, 11):
    SCOPES.append((asyncio.timeout, asyncio.timeout_at))

Timeout = Callable[[float | None], Any]


@pytest.fixture(params=SCOPES, ids=lambda pair: pair[0].__module__)
def timeout(request: pytest.FixtureRequest) -> Timeout:
    return request.param[0]  # type: ignore[no-any-return]


@pytest.fixture(params=SCOPES, ids=lambda pair: pair[0].__module__)
def timeout_at(request: pytest.FixtureRequest) -> Timeout:
    return request.param[1]  # type: ignore[no-any-return]


def test_the_package_uses_the_standard_scope_where_there_is_one() -> None:
    if sys.version_info >= (3, 11):
        assert _compat.timeout is asyncio.timeout
        assert _compat.Timeout is asyncio.Timeout
    else:
        assert _compat.timeout is fallback_timeout


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _sleep_in(scope: Any, seconds: float) -> None:
    """Sleep ``seconds`` inside ``scope``: one call, so ``pytest.raises`` wraps one statement."""
    async with scope:
        await asyncio.sleep(seconds)


async def test_an_expired_scope_raises_timeout_error(timeout: Timeout) -> None:
    scope = timeout(2.5)

    with pytest.raises(TimeoutError):
        await _sleep_in(scope, 10)
    assert scope.expired()
    assert _now() == 2.5
    await asyncio.sleep(1)  # the task is not left cancelled
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0


async def test_a_scope_that_does_not_expire_changes_nothing(timeout: Timeout) -> None:
    async with timeout(5) as scope:
        await asyncio.sleep(1)
    assert not scope.expired()
    await asyncio.sleep(10)
    assert _now() == 11.0


async def test_no_delay_means_no_deadline(timeout: Timeout) -> None:
    async with timeout(None) as scope:
        await asyncio.sleep(1000)
    assert scope.when() is None
    assert not scope.expired()


async def test_a_deadline_already_passed_fires_at_the_next_await(timeout_at: Timeout) -> None:
    await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await _sleep_in(timeout_at(1.0), 1)
    assert _now() == 5.0


async def test_when_is_the_deadline_in_loop_time(timeout: Timeout, timeout_at: Timeout) -> None:
    await asyncio.sleep(3)
    async with timeout(2) as relative, timeout_at(7.5) as absolute:
        assert relative.when() == 5.0
        assert absolute.when() == 7.5


async def test_an_outside_cancellation_is_not_turned_into_a_timeout(timeout: Timeout) -> None:
    async def waits() -> None:
        async with timeout(10):
            await asyncio.sleep(20)

    task = asyncio.get_running_loop().create_task(waits())
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_an_outside_cancellation_first_in_the_same_iteration_wins(
    timeout: Timeout,
) -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def waits() -> None:
        await entered.wait()
        async with timeout(1.0):
            await asyncio.sleep(20)

    task = loop.create_task(waits())
    loop.call_at(1.0, task.cancel)  # registered before the scope's own timer
    entered.set()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_an_outside_cancellation_just_after_the_deadline_in_the_same_iteration(
    timeout: Timeout,
) -> None:
    if timeout is fallback_timeout:
        pytest.xfail("3.10's Task merges a second cancel() into the first (as its wait_for)")
    loop = asyncio.get_running_loop()

    async def waits() -> None:
        async with timeout(1.0):
            await asyncio.sleep(20)

    task = loop.create_task(waits())
    await asyncio.sleep(0)  # the scope's timer is registered first
    loop.call_at(1.0, task.cancel)
    await asyncio.wait([task])
    assert task.cancelled()


async def test_an_outside_cancellation_after_expiry_during_cleanup_propagates(
    timeout: Timeout,
) -> None:
    loop = asyncio.get_running_loop()

    async def waits() -> None:
        async with timeout(1.0):
            try:
                await asyncio.sleep(20)
            finally:
                await asyncio.sleep(5)  # slow cleanup, cancelled from outside at 2.0

    task = loop.create_task(waits())
    loop.call_at(2.0, task.cancel)
    await asyncio.wait([task])
    assert task.cancelled()


async def test_a_body_that_swallows_the_cancellation_ends_normally(timeout: Timeout) -> None:
    async with timeout(1.0) as scope:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(20)
    assert scope.expired()
    await asyncio.sleep(1)
    assert _now() == 2.0


# -- nesting ---------------------------------------------------------------------------------


async def test_the_inner_scope_expires_first(timeout: Timeout) -> None:
    inner = timeout(1)
    async with timeout(10) as outer:
        with pytest.raises(TimeoutError):
            await _sleep_in(inner, 20)
        await asyncio.sleep(2)
    assert inner.expired()
    assert not outer.expired()
    assert _now() == 3.0


async def test_the_outer_scope_expires_first_and_the_inner_one_lets_it_through(
    timeout: Timeout,
) -> None:
    inner_saw: list[str] = []
    outer, inner = timeout(1), timeout(10)

    async def _body() -> None:
        async with outer:
            try:
                async with inner:
                    await asyncio.sleep(20)
            except BaseException as error:
                inner_saw.append(type(error).__name__)
                raise

    with pytest.raises(TimeoutError):
        await _body()
    assert inner_saw == ["CancelledError"]
    assert outer.expired()
    assert not inner.expired()


async def test_both_scopes_expiring_together_belong_to_the_outer_one(timeout: Timeout) -> None:
    inner_saw: list[str] = []
    outer = timeout(1)

    async def _body() -> None:
        async with outer:
            try:
                async with timeout(1):
                    await asyncio.sleep(20)
            except BaseException as error:
                inner_saw.append(type(error).__name__)
                raise

    with pytest.raises(TimeoutError):
        await _body()
    assert inner_saw == ["CancelledError"]
    assert outer.expired()


# -- rescheduling ----------------------------------------------------------------------------


async def test_a_rescheduled_deadline_fires_at_its_new_time(timeout: Timeout) -> None:
    async def _body() -> None:
        async with timeout(1) as scope:
            scope.reschedule(_now() + 4)
            await asyncio.sleep(20)

    with pytest.raises(TimeoutError):
        await _body()
    assert _now() == 4.0


async def test_rescheduling_to_none_removes_the_deadline(timeout: Timeout) -> None:
    async with timeout(1) as scope:
        scope.reschedule(None)
        await asyncio.sleep(20)
    assert not scope.expired()


async def test_rescheduling_to_the_past_fires_at_once(timeout: Timeout) -> None:
    await asyncio.sleep(5)

    async def _body() -> None:
        async with timeout(10) as scope:
            scope.reschedule(1.0)
            await asyncio.sleep(20)

    with pytest.raises(TimeoutError):
        await _body()
    assert _now() == 5.0


async def test_an_expired_or_finished_scope_cannot_be_rescheduled(timeout: Timeout) -> None:
    expired = timeout(1)

    with pytest.raises(TimeoutError):
        await _sleep_in(expired, 20)
    with pytest.raises(RuntimeError):
        expired.reschedule(None)
    async with timeout(1) as finished:
        pass
    with pytest.raises(RuntimeError):
        finished.reschedule(None)
    with pytest.raises(RuntimeError):
        timeout(1).reschedule(None)  # never entered


async def test_a_scope_is_entered_once(timeout: Timeout) -> None:
    scope = timeout(1)
    async with scope:
        with pytest.raises(RuntimeError):
            await scope.__aenter__()


# -- across task boundaries (3.10 hands awaiters a new CancelledError) ----------------------


async def test_a_deadline_reaching_through_gather_is_still_a_timeout(timeout: Timeout) -> None:
    async def _body() -> None:
        async with timeout(1):
            await asyncio.gather(asyncio.sleep(20), asyncio.sleep(30))

    with pytest.raises(TimeoutError):
        await _body()
    assert _now() == 1.0


async def test_a_deadline_reaching_into_an_awaited_task_is_still_a_timeout(
    timeout: Timeout,
) -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(20))

    async def _body() -> None:
        async with timeout(1):
            await task

    with pytest.raises(TimeoutError):
        await _body()
    assert task.cancelled()


async def test_an_outside_cancellation_of_an_awaited_task_is_not_a_timeout(
    timeout: Timeout,
) -> None:
    """Somebody else cancels the task we await: that is their cancellation, not our deadline."""
    loop = asyncio.get_running_loop()
    inner = loop.create_task(asyncio.sleep(20))
    loop.call_at(2.0, inner.cancel)

    async def waits() -> None:
        async with timeout(5):
            await inner

    task = loop.create_task(waits())
    await asyncio.wait([task])
    assert task.cancelled()
    assert _now() == 2.0


async def test_a_group_inside_an_expiring_scope_stops_and_the_scope_times_out(
    timeout: Timeout,
) -> None:
    children_cancelled = 0

    async def child() -> None:
        nonlocal children_cancelled
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            children_cancelled += 1
            raise

    groups: list[Callable[[], Any]] = [FallbackTaskGroup]
    if sys.version_info >= (3, 11):
        groups.append(asyncio.TaskGroup)
    for make_group in groups:

        async def _body(make_group: Callable[[], Any] = make_group) -> None:
            async with timeout(1), make_group() as group:
                group.create_task(child())
                group.create_task(child())

        with pytest.raises(TimeoutError):
            await _body()
    assert children_cancelled == 2 * len(groups)
