"""Builder-wide and per-source read capacity: one global limiter plus optional source limiters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import final

from ..core._validation import check_int, check_str
from ._limiter import CapacityLimiter, CapacitySnapshot

GLOBAL_KEY = "__global__"
"""The :meth:`CapacityController.snapshot` key of the builder-wide limiter (reserved)."""


def _check_source_limit(limit: object) -> int:
    """Return ``limit`` when it is an int >= 1 (the contract's message for per-source limits)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"source concurrency limit must be an int, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError("source concurrency limit must be at least 1")
    return limit


@final
class CapacityLease:
    """The right to run one source call: one global slot, plus one source slot if limited.

    Returned by :meth:`CapacityController.acquire`. :meth:`release` gives both slots back and
    is idempotent, so ``finally: lease.release()`` is always safe. It is also an async context
    manager (``async with await controller.acquire(name):``).
    """

    __slots__ = ("_global", "_released", "_source", "_source_limiter")

    def __init__(
        self, source: str, global_limiter: CapacityLimiter, source_limiter: CapacityLimiter | None
    ) -> None:
        self._source = source
        self._global = global_limiter
        self._source_limiter = source_limiter
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<CapacityLease source={self._source!r} {state}>"

    @property
    def source(self) -> str:
        """The source the lease was acquired for."""
        return self._source

    @property
    def released(self) -> bool:
        """True once :meth:`release` has run."""
        return self._released

    def release(self) -> None:
        """Give the slots back; calling it again does nothing."""
        if self._released:
            return
        self._released = True
        # Reverse order of acquisition, as with nested locks; no await in between, so both go
        # back in the same loop step and nobody observes a half-released lease.
        self._global.release()
        if self._source_limiter is not None:
            self._source_limiter.release()

    async def __aenter__(self) -> CapacityLease:
        """Return the (already held) lease."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the lease, however the block ended."""
        self.release()


@final
class CapacityController:
    """Bounds concurrent source calls builder-wide and, optionally, per source.

    Every call takes its source's slot first (when the source is limited) and only then a
    global slot, so calls queued behind a saturated source never sit on global slots that other
    sources could use. Waiting is FIFO at each stage, and cancellation or an ``asyncio.timeout``
    at any point leaves no slot held. Timeouts are the caller's job: wrap :meth:`acquire` in
    ``asyncio.timeout``.

    A source with no registered limit (never registered, or registered with ``None``) is bound
    by the global limit only: the builder registers every source when it is built, so an
    unknown name can only be a source without its own limit.

    Args:
        global_limit: the most concurrent source calls overall (int >= 1).
        source_limits: per-source limits (source name -> int >= 1), registered at once.

    Raises:
        TypeError: ``global_limit`` is not an int, ``source_limits`` is not a mapping, or one of
            its names or limits has the wrong type.
        ValueError: a limit < 1, an empty source name, or a limited source named
            ``"__global__"``.
    """

    __slots__ = ("_global", "_limited")

    def __init__(
        self, *, global_limit: int, source_limits: Mapping[str, int] | None = None
    ) -> None:
        self._global = CapacityLimiter(check_int("global_limit", global_limit, minimum=1))
        self._limited: dict[str, CapacityLimiter] = {}
        if source_limits is None:
            return
        if not isinstance(source_limits, Mapping):
            raise TypeError(
                f"source_limits must be a mapping of source name to int, "
                f"got {type(source_limits).__name__}"
            )
        for source, limit in source_limits.items():
            self.register_source(source, limit)

    def __repr__(self) -> str:
        return f"CapacityController(global={self._global!r}, sources={len(self._limited)})"

    @property
    def global_limit(self) -> int:
        """The builder-wide limit."""
        return self._global.limit

    def register_source(self, source: str, limit: int | None) -> None:
        """Give ``source`` its own limit; ``None`` registers nothing (the global limit only).

        Registering the same limit again does nothing; a source's limit never changes once
        set, so calls holding its slots can never overlap past either of two limits.

        Args:
            source: the source name.
            limit: an int >= 1, or ``None``.

        Raises:
            TypeError: ``source`` is not a str or ``limit`` is not an int or ``None``.
            ValueError: ``source`` is empty, ``limit`` < 1 (``"source concurrency limit must
                be at least 1"``), ``source`` already has a different limit
                (``"conflicting concurrency limits for source <name>: <old> and <new>"``), or
                ``source`` is ``"__global__"`` (that snapshot key is reserved).
        """
        check_str("source", source)
        if limit is None:
            return
        checked = _check_source_limit(limit)
        current = self._limited.get(source)
        if current is not None:
            if current.limit != checked:
                raise ValueError(
                    f"conflicting concurrency limits for source {source}: "
                    f"{current.limit} and {checked}"
                )
            return
        if source == GLOBAL_KEY:
            raise ValueError(
                f"a source named {GLOBAL_KEY!r} cannot have its own limit: that capacity "
                "snapshot key is reserved for the builder-wide limit"
            )
        self._limited[source] = CapacityLimiter(checked)

    def limit_for(self, source: str) -> int | None:
        """Return ``source``'s own limit, or ``None`` when only the global limit applies.

        Raises:
            TypeError: ``source`` is not a str.
        """
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, got {type(source).__name__}")
        limiter = self._limited.get(source)
        return None if limiter is None else limiter.limit

    async def acquire(self, source: str) -> CapacityLease:
        """Wait for capacity to call ``source``: its own slot first (if limited), then a global one.

        Completes without suspending when both are free. Release the returned lease exactly
        once in a ``finally`` (or use it / :meth:`slot` as an async context manager).

        Raises:
            TypeError: ``source`` is not a str.
            asyncio.CancelledError: cancelled or timed out while waiting; nothing is held.
        """
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, got {type(source).__name__}")
        source_limiter = self._limited.get(source)
        if source_limiter is None:
            await self._global.acquire()
            return CapacityLease(source, self._global, None)
        await source_limiter.acquire()
        try:
            await self._global.acquire()
        except BaseException:
            source_limiter.release()  # cancelled while queued for a global slot
            raise
        return CapacityLease(source, self._global, source_limiter)

    def try_acquire(self, source: str) -> CapacityLease | None:
        """A lease for a ``source`` call when both its slots are free now, else ``None`` (then
        wait with :meth:`acquire`): the common, uncontended case without a coroutine."""
        source_limiter = self._limited.get(source)
        if source_limiter is None:
            if self._global.try_take():
                return CapacityLease(source, self._global, None)
            return None
        if not source_limiter.try_take():
            return None
        if self._global.try_take():
            return CapacityLease(source, self._global, source_limiter)
        source_limiter.release()
        return None

    def shared_only(self, source: str) -> CapacityLimiter | None:
        """The global limiter, when ``source`` has no limit of its own (else ``None``): then a
        call of it needs just one global slot, taken with ``try_take`` and given back with
        ``release``, without a :class:`CapacityLease`."""
        return self._global if source not in self._limited else None

    @asynccontextmanager
    async def slot(self, source: str) -> AsyncIterator[None]:
        """Hold capacity for one ``source`` call for the duration of an ``async with`` block.

        Raises:
            TypeError: ``source`` is not a str.
            asyncio.CancelledError: cancelled or timed out while waiting; nothing is held.
        """
        lease = await self.acquire(source)
        try:
            yield
        finally:
            lease.release()

    def snapshot_now(self) -> dict[str, CapacitySnapshot]:
        """Synchronous form of :meth:`snapshot`."""
        result = {GLOBAL_KEY: self._global.snapshot_now()}
        for source, limiter in self._limited.items():
            result[source] = limiter.snapshot_now()
        return result

    async def snapshot(self) -> dict[str, CapacitySnapshot]:
        """Return the state of every limiter.

        Keys: ``"__global__"`` for the builder-wide limiter, then each source that has its own limit
        under its plain source name (as in ``source_concurrency``). Sources bound only by the
        global limit have no entry; their calls show in ``"__global__"``.
        """
        return self.snapshot_now()

    def in_use_total(self) -> int:
        """Source calls holding capacity now (each holds exactly one global slot)."""
        return self._global.in_use

    def waiting_total(self) -> int:
        """Source calls waiting for capacity now, at a source limiter or the global one."""
        return self._global.waiting + sum(limiter.waiting for limiter in self._limited.values())
