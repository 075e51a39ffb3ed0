"""Bounded per-key work: one call per item, run by exactly ``min(limit, n)`` workers.

The contract's "bounded per-key" mode (builder and publisher cache calls on single-key caches,
single and derived source dispatch) means neither sequential nor unbounded: a fixed pool of
workers pulls items from one shared iterator in input order, so a large batch never makes one
task per item, and exactly ``min(limit, n)`` calls do run at once when the calls wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from .._compat import BaseExceptionGroup, TaskGroup

Item = TypeVar("Item")
R = TypeVar("R")


async def run_bounded(
    items: Sequence[Item], work: Callable[[Item], Awaitable[R]], limit: int
) -> list[R]:
    """Run ``work(item)`` for every item with at most ``limit`` running at once.

    Results are in input order. One item (or ``limit == 1``) runs in the caller's task: no task
    is made when nothing can overlap.

    Raises:
        Exception: the first error a worker raised. The calls still in flight are cancelled and
            awaited before it propagates, and no new call starts.
    """
    results: list[R | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:
            results[index] = await work(item)

    workers = min(limit, len(items))
    if workers <= 1:
        await worker()
        return cast("list[R]", results)
    try:
        async with TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        # Re-raise the cache's (or source's) own error, not a group: callers handle it as is.
        raise errors.exceptions[0] from None
    return cast("list[R]", results)
