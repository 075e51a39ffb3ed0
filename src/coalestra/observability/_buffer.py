"""The engine behind both buffered sinks: a bounded FIFO drained by one owned worker thread.

Producers (the event loop's hot path) only take an uncontended lock, append to a deque and
return; at most they wake the worker when it is idle. The worker thread delivers records one at a
time to the downstream, which may be slow, blocking or raising: nothing it does reaches producers.

Each accepted record carries a sequence number so ``flush`` can wait for "everything accepted
before this call" even while producers keep appending and ``DROP_OLDEST`` evicts from the front.

Unclosed buffers are closed (with a short drain) at interpreter exit, so a forgotten ``close()``
does not lose records silently; the worker is a daemon thread so it never keeps the process alive.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar, final

from ._records import BufferedSinkStats, BufferOverflowPolicy

R = TypeVar("R")

_EXIT_DRAIN_SECONDS: Final = 1.0
"""How long, per buffer, interpreter exit waits for an unclosed buffer to drain."""

_log = logging.getLogger("coalestra.observability")

# Buffers whose worker runs and which were not closed yet: closed at interpreter exit.
_LIVE: weakref.WeakSet[RecordBuffer[Any]] = weakref.WeakSet()


@final
class BufferFullError(queue.Full, OverflowError):
    """A buffer under ``BufferOverflowPolicy.RAISE`` is full: the record was refused.

    A :class:`queue.Full`, as the 0.5 API raised; also an ``OverflowError`` (what our 0.x
    raised), so handlers written for either keep working.
    """


@final
class RecordBuffer(Generic[R]):
    """A bounded queue of records delivered to ``deliver`` by one lazily started daemon thread.

    Args:
        deliver: replays one record to the downstream; it runs on the worker thread only.
        max_pending: the most records queued (the one being delivered is not counted).
        overflow: what to do with a new record when the queue is full.
        name: names the worker thread, for debugging.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_deliver",
        "_delivered",
        "_drop_newest",
        "_dropped",
        "_enqueued",
        "_failures",
        "_flush_waiters",
        "_idle",
        "_inflight",
        "_lock",
        "_max_pending",
        "_name",
        "_peak",
        "_progress",
        "_queue",
        "_raise_when_full",
        "_shutdown_timeouts",
        "_thread",
        "_wakeup",
    )

    def __init__(
        self,
        deliver: Callable[[R], None],
        *,
        max_pending: int,
        overflow: BufferOverflowPolicy,
        name: str,
    ) -> None:
        self._deliver = deliver
        self._max_pending = max_pending
        # Plain bools: the hot path tests them instead of comparing enum members.
        self._drop_newest = overflow is BufferOverflowPolicy.DROP_NEWEST
        self._raise_when_full = overflow is BufferOverflowPolicy.RAISE
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # worker waits here for records
        self._progress = threading.Condition(self._lock)  # flush waits here for deliveries
        self._queue: deque[tuple[int, R]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False
        self._inflight = 0  # sequence number of the record being delivered, 0 if none
        self._flush_waiters = 0
        self._enqueued = 0
        self._delivered = 0
        self._dropped = 0
        self._failures = 0
        self._peak = 0
        self._shutdown_timeouts = 0

    def put(self, record: R) -> None:
        """Queue ``record``; never blocks on the downstream.

        Raises:
            RuntimeError: the buffer is closed.
            BufferFullError: the queue is full and the policy is ``RAISE``; the record is
                refused, not counted as dropped (the caller got it back as an error).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("buffered sink is closed")
            pending = self._queue
            if len(pending) >= self._max_pending:
                if self._raise_when_full:
                    raise BufferFullError(
                        f"{self._name} is full ({self._max_pending} records pending); "
                        "the record was refused"
                    )
                self._dropped += 1
                if self._drop_newest:
                    return
                pending.popleft()
            self._enqueued += 1
            pending.append((self._enqueued, record))
            if self._idle:
                self._wakeup.notify()
            elif self._thread is None:
                self._start_worker()

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._run, name=f"coalestra-{self._name}", daemon=True)
        thread.start()
        # Set only once started: if start() fails, the next record tries again.
        self._thread = thread
        _LIVE.add(self)

    def _run(self) -> None:
        """The worker: deliver records in order until closed and the queue is empty."""
        lock, queue, deliver = self._lock, self._queue, self._deliver
        outcome: bool | None = None  # result of the previous delivery, None before the first
        warned = False
        while True:
            with lock:
                if outcome is not None:
                    self._account(outcome)
                while not queue:
                    if self._closed:
                        return
                    self._idle = True
                    self._wakeup.wait()
                    self._idle = False
                # Between two worker steps the queue only grows, so its peak is seen here (or
                # in _account, _discard_queued, stats): producers pay nothing for it.
                self._note_peak(len(queue))
                self._inflight, record = queue.popleft()
            try:
                deliver(record)
                outcome = True
            except BaseException:  # the downstream must never stop delivery of later records
                outcome = False
                if not warned:
                    warned = True
                    _log.warning(
                        "%s: downstream raised; counting failures", self._name, exc_info=True
                    )
            del record  # do not keep the last record alive while idle

    def _note_peak(self, pending: int) -> None:
        """Remember ``pending`` records as the peak when it is one. Called with the lock held."""
        if pending > self._peak:
            self._peak = pending

    def _account(self, delivered: bool) -> None:
        """Book the outcome of the record in flight. Called with the lock held."""
        self._note_peak(len(self._queue) + 1)
        if delivered:
            self._delivered += 1
        else:
            self._failures += 1
        self._inflight = 0
        if self._flush_waiters:
            self._progress.notify_all()

    def _settled(self, target: int) -> bool:
        """True when no record with sequence number <= ``target`` is pending. Lock held."""
        if 0 < self._inflight <= target:
            return False
        queue = self._queue
        return not queue or queue[0][0] > target

    def flush(self, timeout: float | None) -> bool:
        """Wait until every record accepted before this call was handed to the downstream.

        Returns False if ``timeout`` seconds pass first (``None`` waits as long as it takes), or
        when called from the downstream itself, where waiting would deadlock.
        """
        with self._lock:
            target = self._enqueued
            if self._settled(target):
                return True
            if threading.current_thread() is self._thread:
                return False
            self._flush_waiters += 1
            try:
                return self._progress.wait_for(lambda: self._settled(target), timeout)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None, drain: bool) -> bool:
        """Stop accepting records, deliver (``drain``) or discard the queue, end the worker.

        ``timeout`` is one budget for delivering the queue and ending the worker. Returns True
        when the worker has stopped (or never started). When ``timeout`` passes first, the
        timeout is counted, records still queued are discarded and counted as dropped, and the
        worker ends once the downstream returns from the record it holds.
        """
        with self._lock:
            self._closed = True
            if not drain:
                self._discard_queued()
            self._wakeup.notify_all()
            thread = self._thread
        if thread is None:
            _LIVE.discard(self)
            return True
        if thread is threading.current_thread():
            return False  # closed from the downstream: the worker ends after this record
        thread.join(timeout)
        with self._lock:
            if thread.is_alive():
                self._shutdown_timeouts += 1
                self._discard_queued()
                return False
            _LIVE.discard(self)
            return True

    def close_nowait(self) -> None:
        """Stop accepting records; the worker delivers what is queued, then ends."""
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()

    def _discard_queued(self) -> None:
        """Drop every queued record, counting it. Called with the lock held."""
        count = len(self._queue)
        self._note_peak(count + (1 if self._inflight else 0))
        if count:
            self._queue.clear()
            self._dropped += count
            self._progress.notify_all()

    def stats(self) -> BufferedSinkStats:
        """Return the counters, read consistently under the lock."""
        with self._lock:
            thread = self._thread
            pending = len(self._queue) + (1 if self._inflight else 0)
            self._note_peak(pending)
            return BufferedSinkStats(
                enqueued=self._enqueued,
                delivered=self._delivered,
                dropped=self._dropped,
                failures=self._failures,
                pending=pending,
                closed=self._closed,
                max_pending=self._max_pending,
                peak_pending=self._peak,
                # Not started yet (no record so far) counts as alive: it starts on demand.
                worker_alive=not self._closed if thread is None else thread.is_alive(),
                shutdown_timeout_count=self._shutdown_timeouts,
            )

    @property
    def worker(self) -> threading.Thread | None:
        """The worker thread, once started."""
        return self._thread


def _close_live_buffers() -> None:
    """At interpreter exit, give every unclosed buffer a short, bounded chance to drain."""
    for buffer in list(_LIVE):
        try:
            buffer.close(_EXIT_DRAIN_SECONDS, True)
        except Exception:  # exit must go on whatever one buffer does
            _log.exception("closing %s at exit failed", buffer._name)


atexit.register(_close_live_buffers)
