"""Keeping a tiered cache's L1 in step with Redis: change messages, recoveries, drops."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ...cache import AsyncMemoryCache
from ._layout import key_from_name
from ._touchlog import TouchLog

if TYPE_CHECKING:
    from ._cache import RedisCache


@final
class L1Follower:
    """Follows the Redis tier's changes into one L1.

    Another process's write or invalidation drops its keys from L1; a ``clear`` drops all of
    L1; so does every (re)subscription and every recovery of Redis, since messages may have
    been missed meanwhile. Each change is marked in :attr:`log`, so no fill that began before
    it copies a superseded value into L1.
    """

    __slots__ = ("_l1", "_l2", "_started", "drops", "log", "ready", "remote")

    def __init__(self, l1: AsyncMemoryCache, l2: RedisCache) -> None:
        self._l1 = l1
        self._l2 = l2
        self.log = TouchLog()
        # False until the listener runs, and again after Redis recovered (L1 must be dropped):
        # the one flag the hit path reads.
        self.ready = False
        self._started = False
        self.drops = 0  # whole-L1 drops
        self.remote = 0  # keys dropped on other processes' news
        l2._notifier.add_handlers(self._on_message, self.drop_l1)
        l2._link.on_recovered(self._on_recovered)

    async def prepare(self) -> None:
        """Before L1 serves anything: listen for changes; drop L1 if Redis just recovered."""
        if not self._started:
            self._started = True
            await self._l2._notifier.start()
        else:
            await self.drop_l1()
        self.ready = True

    def _on_recovered(self) -> None:
        # Called inside a Redis call, where L1 cannot be awaited: mark it, drop it before the
        # next use. Fills that began earlier are refused from now on.
        self.log.touch_all()
        self.ready = False

    async def drop_l1(self) -> None:
        """Drop everything L1 holds (fills under way are refused)."""
        self.log.touch_all()
        await self._l1.clear()
        self.drops += 1

    async def _on_message(self, kind: str, origin: str, names: list[str]) -> None:
        if kind == "c":
            await self.drop_l1()
            return
        if kind not in ("w", "i") or origin == self._l2._store.token:
            return  # lease news, or this process's own change (already applied to L1)
        keys = []
        for name in names:
            try:
                keys.append(key_from_name(name))
            except ValueError:
                continue
        self.log.touch(keys)
        await self._l1.invalidate_many(keys)
        self.remote += len(keys)
