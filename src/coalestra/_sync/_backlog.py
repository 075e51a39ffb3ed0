"""The bounded backlog of non-blocking submissions (accepted but not finished)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar, final

from ..core import SubmissionBacklogFullError
from ..core._closed import SYNC_BUILDER_CLOSED, ClosedError

T = TypeVar("T")


@final
class SubmissionBacklog:
    """At most ``limit`` accepted submissions that have not finished yet. Thread-safe.

    A submission counts from the moment it is accepted until its future is done (completed,
    failed or cancelled). A full backlog refuses at once: a producer is never blocked.
    """

    __slots__ = ("_closed", "_futures", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    @property
    def limit(self) -> int:
        """The most pending submissions."""
        return self._limit

    @property
    def pending(self) -> int:
        """Submissions accepted and not finished yet (a done future no longer counts, even
        before its done-callback has run)."""
        with self._lock:
            return self._unfinished()

    def _unfinished(self) -> int:
        return sum(1 for future in self._futures if not future.done())

    def submit(
        self, start: Callable[[], concurrent.futures.Future[T]]
    ) -> concurrent.futures.Future[T]:
        """Accept one submission: ``start()`` schedules it and returns its future.

        Raises:
            SubmissionBacklogFullError: ``limit`` submissions are pending.
            RuntimeError: the backlog was closed ("SyncSnapshotBuilder is closed").
        """
        with self._lock:
            # Accepting and registering under one lock: a flush() or close() never misses a
            # submission that was accepted before it began.
            if self._closed:
                raise ClosedError(SYNC_BUILDER_CLOSED)
            pending = len(self._futures)
            if pending >= self._limit:
                pending = self._unfinished()  # rare: a done future may await its callback
                if pending >= self._limit:
                    raise SubmissionBacklogFullError(limit=self._limit, pending=pending)
            future = start()
            self._futures.add(future)
        # Outside the lock: a future already done runs the callback here, at once.
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def wait(self, timeout: float | None) -> int:
        """Wait up to ``timeout`` seconds for the submissions pending now; return how many of
        them are still unfinished."""
        with self._lock:
            accepted = list(self._futures)
        _done, unfinished = concurrent.futures.wait(accepted, timeout)
        return len(unfinished)

    def close(self) -> None:
        """Accept nothing more."""
        with self._lock:
            self._closed = True

    def cancel_all(self) -> None:
        """Cancel every pending submission (their coroutines are cancelled on the loop)."""
        with self._lock:
            accepted = list(self._futures)
        for future in accepted:
            future.cancel()
