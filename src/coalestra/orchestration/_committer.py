"""Batched commits: write what a group resolved to the cache, then wake the key's waiters."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, final

from ..core import DiagnosticsCollector, PayloadIsolationError, ResourceKey, SnapshotValue
from ._singleflight import Flight

if TYPE_CHECKING:
    from ._engine import Engine


@final
class Committer:
    """Everything a group resolves within one turn of the event loop is written in one cache
    call (a fast source's 200 keys: one write); each key then resolves at once."""

    __slots__ = ("_diag", "_engine", "_flights", "_flusher", "_queued")

    def __init__(
        self, engine: Engine, flights: dict[ResourceKey, Flight], diag: DiagnosticsCollector
    ) -> None:
        self._engine = engine
        self._flights = flights
        self._diag = diag
        self._queued: list[SnapshotValue[Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    def enqueue(self, values: list[SnapshotValue[Any]]) -> None:
        """Queue values for the next batched write."""
        if not values:
            return
        self._queued.extend(values)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                await self.commit(batch)
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Wait until everything queued is written and resolved."""
        while self._flusher is not None:
            await self._flusher

    async def stop(self) -> None:
        """Cancel a pending write (the group is being torn down)."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def commit(self, values: list[SnapshotValue[Any]]) -> None:
        """One batched cache write, then resolve each key (with the newer cached revision when
        one was published meanwhile)."""
        if not values:
            return
        engine = self._engine
        self._diag.cache_batch_writes += 1
        try:
            written = await engine.cache.write(values)
        except PayloadIsolationError:
            written = {}  # the cache cannot copy it: serve our private copy, uncached
        for value in values:
            outcome = engine.prefer_cached(value, written.get(value.key))
            engine.flights.resolve(self._flights[value.key], outcome)
