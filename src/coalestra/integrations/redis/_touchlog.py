"""Which keys changed since an operation began: what keeps a tiered cache's L1 from going back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

from ...core import ResourceKey

_PRUNE_AT = 4096  # touch-log entries kept while operations overlap without pause


@final
class TouchLog:
    """Which keys changed since an operation began.

    An L2 read or write that started before a change (another process's write, an
    invalidation, an L1 drop) must not copy its result into L1 after that change: it could put
    back a value the change superseded. Each operation takes a sequence number when it begins
    and fills L1 only with keys untouched since.
    """

    __slots__ = ("_active", "_cleared", "_seq", "_touched")

    def __init__(self) -> None:
        self._seq = 0
        self._cleared = 0
        self._touched: dict[ResourceKey, int] = {}
        self._active: dict[int, int] = {}

    def begin(self) -> int:
        """Start an operation; returns its sequence number."""
        start = self._seq
        self._active[start] = self._active.get(start, 0) + 1
        return start

    def end(self, start: int) -> None:
        """End the operation that began at ``start``."""
        left = self._active[start] - 1
        if left:
            self._active[start] = left
        else:
            del self._active[start]
        if not self._active:
            self._touched.clear()  # nobody can ask about the past any more
        elif len(self._touched) > _PRUNE_AT:
            oldest = min(self._active)
            self._touched = {k: s for k, s in self._touched.items() if s > oldest}

    def touch(self, keys: Iterable[ResourceKey]) -> int:
        """Record a change of ``keys``; returns its sequence number."""
        self._seq += 1
        seq = self._seq
        for key in keys:
            self._touched[key] = seq
        return seq

    def touch_all(self) -> None:
        """Record a change of every key (L1 dropped)."""
        self._seq += 1
        self._cleared = self._seq
        self._touched.clear()

    def unchanged(self, key: ResourceKey, since: int) -> bool:
        """True when ``key`` did not change after sequence number ``since``."""
        return self._cleared <= since and self._touched.get(key, 0) <= since
