"""Falling through: the keys that failed at one source go on down their chains as they fail,
not when their siblings' calls are done (a derived sibling waiting on them cannot deadlock)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

from .._compat import TaskGroup
from ..core import ResourceKey


@final
class FallThrough:
    """Sends keys that failed at one source on down their chains as they fail; keys failing
    in one loop turn travel on together (they can still share a lower batch source's call)."""

    __slots__ = ("_group", "_pending", "_start", "_walk")

    def __init__(
        self,
        group: TaskGroup,
        walk: Callable[[list[ResourceKey], int], Awaitable[None]],
        start: int,
    ) -> None:
        self._group = group
        self._walk = walk
        self._start = start
        self._pending: list[ResourceKey] = []

    def __call__(self, keys: list[ResourceKey]) -> None:
        if not keys:
            return
        if not self._pending:
            self._group.create_task(self._go())
        self._pending.extend(keys)

    async def _go(self) -> None:
        keys, self._pending = self._pending, []
        await self._walk(keys, self._start)
