"""The synchronous facade over a :class:`SnapshotBuilder`: :class:`SyncSnapshotBuilder`."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar, final, overload

from ..core import (
    BuilderHealth,
    ResourceKey,
)
from ..core._closed import BUILDER_CLOSED, ClosedError
from ..core._validation import check_bool, check_float
from ..orchestration import SnapshotBuilder
from ._blocking import blocking, opening
from ._core import BacklogView, FacadeCore, bind
from ._publisher import SyncResourcePublisher
from ._session import SyncSnapshotSession

T = TypeVar("T")


@final
class SyncSnapshotBuilder(BacklogView):
    """A blocking facade over a :class:`SnapshotBuilder`, for synchronous applications.

    It owns one persistent event loop in one daemon thread, started here; keep the facade alive
    for the application's lifetime. Every blocking method runs its coroutine on that loop
    through one portal and waits; any number of threads may call it at once. Blocking methods
    refuse to run on a thread with a running event loop (``RuntimeError``), since that would
    stall or deadlock it: use the async API there.

    The builder must not have been used on another event loop (asyncio primitives bind to
    the loop that first uses them): create it, hand it to the facade, and from then on use it
    only through the facade. A builder serves one facade only.

    ``publisher`` offers blocking publication plus non-blocking ``submit_*`` methods whose
    futures are held in a bounded backlog (``max_pending_submissions``).

    Closing (``close()``, the ``with`` block, or, as a last resort, garbage collection or
    interpreter exit) stops accepting submissions, lets accepted ones finish for up to
    ``shutdown_timeout_seconds``, cancels the rest (their futures report ``cancelled()``),
    runs ``builder.aclose()`` (or, with ``close_builder=False``, ``wait_for_refreshes()``)
    under the same timeout, and stops the loop and joins its thread. After that every call
    raises ``RuntimeError("SyncSnapshotBuilder is closed")``.

    Args:
        builder: the builder to drive.
        close_builder: close the builder when the facade closes.
        shutdown_timeout_seconds: how long closing waits for submissions, and then for the
            builder (finite, > 0).
        max_pending_submissions: the most accepted, unfinished submissions (>= 1).

    Raises:
        TypeError: ``builder`` is not a SnapshotBuilder, or another argument has the wrong type.
        ValueError: a timeout that is not positive, NaN or infinite; a limit below 1; a
            builder already driven by another facade.
        RuntimeError: the builder is closed ("SnapshotBuilder is closed").
    """

    __slots__ = ("__weakref__", "_core", "_finalizer", "_publisher")

    def __init__(
        self,
        builder: SnapshotBuilder,
        *,
        close_builder: bool = True,
        shutdown_timeout_seconds: float = 5.0,
        max_pending_submissions: int = 1024,
    ) -> None:
        if not isinstance(builder, SnapshotBuilder):
            raise TypeError(f"builder must be a SnapshotBuilder, got {type(builder).__name__}")
        check_bool("close_builder", close_builder)
        timeout = check_float("shutdown_timeout_seconds", shutdown_timeout_seconds, minimum=None)
        if timeout <= 0:
            raise ValueError("shutdown_timeout_seconds must be positive")
        if type(max_pending_submissions) is not int:
            raise TypeError("max_pending_submissions must be an int")
        if max_pending_submissions < 1:
            raise ValueError("max_pending_submissions must be at least 1")
        if builder.closed:
            raise ClosedError(BUILDER_CLOSED)
        bind(builder)
        self._core = core = FacadeCore(
            builder,
            close_builder=close_builder,
            shutdown_timeout=timeout,
            max_pending=max_pending_submissions,
        )
        self._publisher = SyncResourcePublisher(self, builder.publisher)
        # Holds the core, not the facade: an unclosed facade is closed when collected, or
        # at interpreter exit, so its loop thread never outlives its last user.
        self._finalizer = weakref.finalize(self, core.finalize)

    # -- properties --------------------------------------------------------------------------

    @property
    def builder(self) -> SnapshotBuilder:
        """The async builder this facade drives (use it only through the facade)."""
        return self._core.builder

    @property
    def publisher(self) -> SyncResourcePublisher:
        """Blocking and non-blocking publication into the builder's cache: wraps
        ``builder.publisher``."""
        return self._publisher

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._core.closed

    # -- blocking calls ----------------------------------------------------------------------

    build = blocking(
        SnapshotBuilder.build,
        """Blocking :meth:`SnapshotBuilder.build`.

        Raises:
            SnapshotBuildError, TypeError, ValueError: as :meth:`SnapshotBuilder.build`.
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called
                from a thread running an event loop.
        """,
    )

    @overload
    def get(
        self,
        key: ResourceKey,
        *,
        expected_type: type[T],
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T: ...
    @overload
    def get(
        self,
        key: ResourceKey,
        *,
        expected_type: None = None,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def get(
        self,
        key: ResourceKey,
        *,
        expected_type: type[T] | None = None,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T | Any:
        """Blocking :meth:`SnapshotBuilder.get`: one key's payload.

        Raises:
            ResourceResolutionError, TypeError, ValueError: as :meth:`SnapshotBuilder.get`
                (the key's own error, never SnapshotBuildError).
            SessionClosedError: the facade (or the builder) is closed.
            RuntimeError: called from a thread running an event loop.
        """
        # Typed loosely here: the overloads of ``SnapshotBuilder.get`` (not this one) promise T.
        get: Callable[..., Coroutine[Any, Any, Any]] = self._core.builder.get
        return self._core.call(
            get,
            key,
            expected_type=expected_type,
            deadline_seconds=deadline_seconds,
            metadata=metadata,
        )

    build_request = blocking(
        SnapshotBuilder.build_request,
        """Blocking :meth:`SnapshotBuilder.build_request`: only required failures raise.

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, TypeError, ValueError: as
                :meth:`SnapshotBuilder.build_request`.
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called
                from a thread running an event loop.
        """,
    )
    try_build_request = blocking(
        SnapshotBuilder.try_build_request, """Blocking :meth:`SnapshotBuilder.try_build_request`."""
    )
    try_build_requests = blocking(
        SnapshotBuilder.try_build_requests,
        """Blocking :meth:`SnapshotBuilder.try_build_requests`.""",
    )

    session = opening(
        SnapshotBuilder.session,
        SyncSnapshotSession,
        """Start a blocking multi-stage session (see :class:`SnapshotSession`).

        Raises:
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called
                from a thread running an event loop.
            TypeError, ValueError: a bad deadline, metadata or snapshot id.
        """,
    )

    wait_for_refreshes = blocking(
        SnapshotBuilder.wait_for_refreshes,
        """Block until every background refresh started so far (and meanwhile) has ended.

        Raises:
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called
                from a thread running an event loop.
        """,
    )

    def health_snapshot(self) -> BuilderHealth:
        """The builder's health, with this facade's ``pending_submissions`` and
        ``max_pending_submissions`` filled in.

        Raises:
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called
                from a thread running an event loop.
        """
        core = self._core
        health = core.call(core.builder.health_snapshot)
        return dataclasses.replace(
            health,
            pending_submissions=core.backlog.pending,
            max_pending_submissions=core.backlog.limit,
        )

    def flush_submissions(self, *, timeout_seconds: float | None = None) -> None:
        """Block until every submission accepted before this call has finished (completed,
        failed or cancelled). Their outcomes stay on their futures; nothing is raised for them.

        Args:
            timeout_seconds: the longest wait (> 0), or ``None`` for no limit.

        Raises:
            TimeoutError: ``"Timed out waiting for <n> non-blocking submission(s)"``: some of
                those submissions are still pending after the timeout (they go on: nothing is
                cancelled).
            TypeError: a timeout that is not a number.
            ValueError: ``"timeout_seconds must be positive"``.
            RuntimeError: the facade is closed, or called from a thread running an event loop.
        """
        self._core.flush(timeout_seconds)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the facade (see the class docstring for the order). Idempotent.

        ``shutdown_timeout_seconds`` is also the budget of the builder's observability buffers
        (``buffer_observability``): when they outlive it, the error below propagates, but only
        after their workers have finished (the loop thread stops last).

        Raises:
            ObservabilityShutdownTimeoutError: the builder's buffers outlived the budget.
            RuntimeError: called from a thread running an event loop while still open.
        """
        self._core.close()
        self._finalizer.detach()

    def _target(self) -> SnapshotBuilder:
        """The builder the blocking methods run on (the core checks that the facade is open)."""
        return self._core.builder

    def __enter__(self) -> SyncSnapshotBuilder:
        self._core.check_open()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.pending_submissions} pending submissions"
        return f"<SyncSnapshotBuilder {state}>"
