"""Payload copies at ownership boundaries, with large copies offloaded to bounded worker threads.

Which copies go to a thread:

* ``run_in_thread=False``: none; every copy runs inline on the event loop.
* ``run_in_thread=None`` (default): large copies, and only with the default ``copy.deepcopy``
  copier (known to be thread-safe). Custom copiers stay inline: they may depend on thread
  affinity.
* ``run_in_thread=True``: large copies, whatever the copier (the caller vouches it is
  thread-safe).

"Large" is a deliberately cheap estimate, one ``len()`` call that never walks the payload: a sized
container with more than :data:`LARGE_PAYLOAD_ITEMS` top-level items. A thread hop costs tens of
microseconds, so offloading pays only for copies at least that slow; small payloads (and objects
without a length) are copied inline. Metadata is copied inline: it is small by nature.

At most ``max_concurrency`` copies run in threads at once. Cancelling a waiting caller does not
stop a running thread, so its slot stays reserved until the thread really finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence, Sized
from typing import Any, final

from ..core import PayloadIsolator, ResourceKey, SnapshotValue

LARGE_PAYLOAD_ITEMS = 256
"""A container with more top-level items than this is copied in a worker thread (if allowed)."""


def is_large(value: object) -> bool:
    """True when ``value`` is a sized container with more than :data:`LARGE_PAYLOAD_ITEMS` items."""
    if not isinstance(value, Sized):
        return False
    try:
        return len(value) > LARGE_PAYLOAD_ITEMS
    except Exception:  # a broken __len__ only means "not known to be large"
        return False


@final
class PayloadCopies:
    """Copies payloads for one owner (a cache or a publisher), offloading large copies.

    Args:
        isolator: does the copying (and decides what is immutable, hence shared).
        run_in_thread: see the module docstring.
        max_concurrency: the most copies running in worker threads at once (>= 1).
    """

    __slots__ = ("_isolator", "_offload", "_slots")

    def __init__(
        self, isolator: PayloadIsolator, *, run_in_thread: bool | None, max_concurrency: int
    ) -> None:
        self._isolator = isolator
        self._offload = isolator.uses_default_copier if run_in_thread is None else run_in_thread
        self._slots = asyncio.Semaphore(max_concurrency)

    @property
    def isolator(self) -> PayloadIsolator:
        """The isolator doing the copies."""
        return self._isolator

    def is_mutable(self, value: SnapshotValue[Any]) -> bool:
        """True when ``value``'s payload or metadata holds something that must be copied."""
        isolator = self._isolator
        return isolator.needs_copy(value.value) or isolator.metadata_needs_copy(value.metadata)

    async def copy_payloads(
        self, jobs: Sequence[tuple[Any, ResourceKey]], *, context: str
    ) -> list[Any]:
        """Return an isolated copy of each ``(payload, key)`` (immutables shared as they are).

        Small copies run inline first, then large ones run concurrently in threads (bounded).

        Raises:
            PayloadIsolationError: a payload could not be copied (the message names ``context``
                and the key); the first failing job in input order is reported, after every
                started thread copy has finished.
        """
        isolator = self._isolator
        results: list[Any] = [None] * len(jobs)
        offloaded: list[int] = []
        for index, (payload, key) in enumerate(jobs):
            if not isolator.needs_copy(payload):
                results[index] = payload
            elif self._offload and is_large(payload):
                offloaded.append(index)
            else:
                results[index] = isolator.copy(payload, context=f"{context} {key}")
        if offloaded:
            copies = await asyncio.gather(
                *(self._copy_in_thread(jobs[i][0], f"{context} {jobs[i][1]}") for i in offloaded),
                return_exceptions=True,
            )
            for index, copied in zip(offloaded, copies, strict=True):
                if isinstance(copied, BaseException):
                    raise copied
                results[index] = copied
        return results

    async def isolate(
        self, values: Sequence[SnapshotValue[Any]], *, context: str
    ) -> list[tuple[SnapshotValue[Any], bool]]:
        """Return, for each value, a copy sharing no mutable payload or metadata with it, and
        whether it holds mutable data at all.

        A value whose payload and metadata are all immutable is returned as it is (the common
        case costs one type check per value). ``context`` says which boundary this is; error
        messages add the key.

        Raises:
            PayloadIsolationError: a payload or metadata value could not be copied.
        """
        flags = [self.is_mutable(value) for value in values]
        if not any(flags):
            return [(value, False) for value in values]
        mutable = [value for value, flag in zip(values, flags, strict=True) if flag]
        payloads = iter(
            await self.copy_payloads([(v.value, v.key) for v in mutable], context=context)
        )
        rebuild = self._rebuild
        return [
            (rebuild(value, next(payloads), context=context), True) if flag else (value, False)
            for value, flag in zip(values, flags, strict=True)
        ]

    async def isolate_values(
        self, values: Sequence[SnapshotValue[Any]], *, context: str
    ) -> list[SnapshotValue[Any]]:
        """Like :meth:`isolate`, without the flags."""
        return [value for value, _mutable in await self.isolate(values, context=context)]

    def _rebuild(
        self, value: SnapshotValue[Any], payload: Any, *, context: str
    ) -> SnapshotValue[Any]:
        clone = value._evolve(
            payload, age_seconds=value.age_seconds, stale=value.stale, from_cache=value.from_cache
        )
        metadata = value.metadata
        if self._isolator.metadata_needs_copy(metadata):
            frozen = self._isolator.freeze_metadata(metadata, context=f"{context} {value.key}")
            # ``clone`` is brand new and not yet shared, so filling in a field is still safe.
            object.__setattr__(clone, "metadata", frozen)
        return clone

    async def _copy_in_thread(self, payload: Any, context: str) -> Any:
        await self._slots.acquire()
        try:
            task = asyncio.ensure_future(
                asyncio.to_thread(self._isolator.copy, payload, context=context)
            )
        except BaseException:
            self._slots.release()
            raise
        # The slot is released when the thread is done, not when this caller stops waiting:
        # a cancelled caller cannot stop the thread, so the slot must stay reserved until then.
        task.add_done_callback(self._thread_done)
        return await asyncio.shield(task)

    def _thread_done(self, task: asyncio.Future[Any]) -> None:
        self._slots.release()
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not logged as lost
