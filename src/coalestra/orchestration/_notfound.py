"""Negative caching: keys every source said do not exist, remembered for a while (opt-in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import final

from ..core import Clock, ResourceKey, ResourceNotFoundError


@final
class NotFoundMemory:
    """The builder's memory of not-found keys: ``ttl_seconds`` each, at most ``max_entries``
    (the oldest entry goes first). Disabled (a no-op) when ``ttl_seconds`` is ``None``.

    It lives beside the cache, not in it: a not-found answer is no payload, and a value the
    cache holds for the key (a publication, say) is always served before this is consulted.
    """

    __slots__ = ("_clock", "_entries", "_max_entries", "ttl_seconds")

    def __init__(self, ttl_seconds: float | None, clock: Clock, max_entries: int = 10000) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[ResourceKey, tuple[float, ResourceNotFoundError]] = {}

    def remember(self, error: ResourceNotFoundError) -> None:
        """Remember that ``error.key`` was not found, from now for ``ttl_seconds``."""
        if self.ttl_seconds is None:
            return
        entries = self._entries
        entries.pop(error.key, None)  # re-inserted last: eviction is oldest-first
        entries[error.key] = (self._clock.monotonic() + self.ttl_seconds, error)
        while len(entries) > self._max_entries:
            del entries[next(iter(entries))]

    def recall(self, key: ResourceKey) -> ResourceNotFoundError | None:
        """A new error for ``key`` if it is remembered as not found, else ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, error = entry
        if self._clock.monotonic() >= expires:
            del self._entries[key]
            return None
        # A new error object per build: a raised error collects its caller's traceback.
        return ResourceNotFoundError(key, error.failures)

    def skip_remembered(
        self,
        keys: list[ResourceKey],
        resolve: Callable[[ResourceKey, ResourceNotFoundError], None],
    ) -> list[ResourceKey]:
        """``resolve`` each key of ``keys`` remembered as not found with a new error, without
        asking a source; return the others."""
        rest: list[ResourceKey] = []
        for key in keys:
            error = self.recall(key)
            if error is None:
                rest.append(key)
            else:
                resolve(key, error)
        return rest

    def forget(self, keys: Iterable[ResourceKey] | None = None) -> None:
        """Forget ``keys`` (every key when ``None``)."""
        if keys is None:
            self._entries.clear()
            return
        for key in keys:
            self._entries.pop(key, None)
