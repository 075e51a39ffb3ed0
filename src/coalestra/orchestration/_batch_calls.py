"""A group's level at a batch source: keys reaching it in the same loop turn share its calls
(say, keys failing at different higher sources at once), made in ``max_batch_size`` chunks
through at most ``max_pending_tasks`` workers; what a chunk does not make goes on down its
chain at once. Single-key sources are called in :mod:`._engine` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, final

from ..core import ResourceKey, ResourceNotFound, SnapshotValue, SourceUnavailableError
from ._ledger import KeyLedger
from ._machinery import GroupResolution
from ._sources import RegisteredSource

FallThrough = Callable[[list[ResourceKey]], None]
"""Sends keys a call did not make on down their chains."""


@final
class BatchCalls:
    """One group run's calls to its batch sources (made when the group first reaches one)."""

    __slots__ = ("_gathering", "_run")

    def __init__(self, run: GroupResolution) -> None:
        self._run = run
        # source index -> the keys gathered for its next call, and the call's end
        self._gathering: dict[int, tuple[list[ResourceKey], asyncio.Future[None]]] = {}

    async def gather(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: FallThrough,
        made: list[SnapshotValue[Any]],
    ) -> None:
        """Call ``source`` for ``keys`` and the keys that reach it in the same loop turn; the
        first arrival dispatches for all. Made values go to ``made``."""
        done: asyncio.Future[None] | None = None
        if len(keys) != len(self._run.flights):  # else nobody else of the group can come
            gathering = self._gathering.get(source.index)
            if gathering is not None:
                gathering[0].extend(keys)
                await gathering[1]
                return
            keys = list(keys)
            done = asyncio.get_running_loop().create_future()
            self._gathering[source.index] = (keys, done)
        try:
            if done is not None:
                try:
                    await asyncio.sleep(0)  # one turn for the others to arrive
                finally:
                    del self._gathering[source.index]
            size = source.max_batch_size or len(keys)
            chunks = [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]
            self._run.diag.batch_chunks += len(chunks)

            async def fetch_chunk(chunk: tuple[ResourceKey, ...]) -> None:
                fall_through(await self._fetch_chunk(source, chunk, made))

            await self._run.pool(chunks, fetch_chunk)
        except BaseException:
            if done is not None:
                done.cancel()  # the gatherers fail with us rather than wait forever
            raise
        if done is not None:
            done.set_result(None)

    async def _fetch_chunk(
        self,
        source: RegisteredSource,
        chunk: tuple[ResourceKey, ...],
        made: list[SnapshotValue[Any]],
    ) -> list[ResourceKey]:
        """One chunk's call: the keys it did not make (their failures in the ledger)."""
        run = self._run
        factory = run.engine.factory
        successes = (
            factory.circuit_successes_not_found
            if source.omitted_means_not_found
            else factory.circuit_successes
        )
        result = await run.engine.batches.call(
            source, chunk, run.window, run.diag, successes, shared=run.refresh_for is None
        )
        if result.error is not None or result.value is None:
            return run.ledger.fail_all(source, chunk, result)
        failed = run.ledger.fail_blocked(source, result)
        payloads = result.value
        # B-SRC-4 by default; a source that opted in means "no such resource" by omitting it.
        omitted = ResourceNotFound if source.omitted_means_not_found else SourceUnavailableError
        for key in result.called:
            if key not in payloads:
                missing = omitted(f"batch source {source.name} omitted resource {key}")
                run.ledger.fail_fetch(key, source.name, missing, result.attempts)
                failed.append(key)
        accepted = await factory.accept(
            source, payloads, result, made, self._ledger, run.diag, ctx=run.ctx
        )
        failed.extend(key for key in payloads if key not in accepted)
        return failed

    def _ledger(self) -> KeyLedger:
        return self._run.ledger
