"""Commits: write what one priority level of a group resolved in one cache call, then resolve
each key's flight with what the build serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from ..core import (
    CacheWriteResult,
    DiagnosticsCollector,
    PayloadIsolationError,
    ResourceKey,
    SnapshotValue,
)
from ._flights import Flight

if TYPE_CHECKING:
    from ._engine import Engine


@final
class Committer:
    """After each priority level, every fresh value it produced is written in one cache call
    (a fast source's 200 keys: one write); each key then resolves at once."""

    __slots__ = ("_diag", "_engine", "_flights")

    def __init__(
        self, engine: Engine, flights: dict[ResourceKey, Flight], diag: DiagnosticsCollector
    ) -> None:
        self._engine = engine
        self._flights = flights
        self._diag = diag

    async def commit(self, values: Sequence[SnapshotValue[Any]], *, write: bool = True) -> None:
        """One cache write of ``values`` (unless ``write`` is False), then resolve each key
        with what the build serves for it (:meth:`Engine.served`).

        Raises:
            Exception: whatever the cache raised (except an uncopyable payload: that value is
                served uncached).
        """
        if not values:
            return
        engine = self._engine
        written: Mapping[ResourceKey, CacheWriteResult | None] = {}
        if write:
            if engine.cache.batch_writes:
                self._diag.cache_batch_writes += 1
            try:
                written = await engine.cache.write(values)
            except PayloadIsolationError:
                written = {}  # the cache cannot copy it: serve our private copy, uncached
        resolve, flights = engine.flights.resolve, self._flights
        for value in values:
            outcome = engine.served(value, written.get(value.key), value.source)
            resolve(flights[value.key], outcome)
