"""Blocking multi-stage sessions: :class:`SyncSnapshotSession`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, final

from ..core import (
    RequestDegradationPolicy,
    ResourceKey,
    Snapshot,
    SnapshotAcceptancePolicy,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotResult,
)
from ..core._closed import SYNC_SESSION_CLOSED, ClosedError
from ..orchestration import SnapshotSession
from ._publisher import owner_core

if TYPE_CHECKING:
    # The builder by what these objects use of it (see FacadeOwner): no import circle.
    from ._core import FacadeOwner as SyncSnapshotBuilder


@final
class SyncSnapshotSession:
    """A :class:`SnapshotSession` for synchronous code, run on its owner's event loop.

    Every method blocks until the session's coroutine has finished on the owner's loop, with
    the semantics of the async session (pinning, remembered errors, transactional
    revalidation). Create it with :meth:`SyncSnapshotBuilder.session`. Once closed, every
    call raises ``RuntimeError("SyncSnapshotSession is closed")``; once its facade is closed,
    ``RuntimeError("SyncSnapshotBuilder is closed")``.

    Args:
        owner: the facade whose loop runs the session.
        session: the async session, created by the owner's builder.

    Raises:
        TypeError: ``owner`` or ``session`` has the wrong type.
    """

    __slots__ = ("_closed", "_core", "_session")

    def __init__(self, owner: SyncSnapshotBuilder, session: SnapshotSession) -> None:
        self._core = owner_core(owner)
        if not isinstance(session, SnapshotSession):
            raise TypeError(f"session must be a SnapshotSession, got {type(session).__name__}")
        self._session = session
        self._closed = False

    @property
    def snapshot_id(self) -> str:
        """The id of every snapshot the session returns."""
        return self._session.snapshot_id

    @property
    def created_at(self) -> float:
        """Wall-clock time the session was created."""
        return self._session.created_at

    @property
    def closed(self) -> bool:
        """True once the session, its builder or the facade is closed."""
        return self._closed or self._session.closed or self._core.closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(SYNC_SESSION_CLOSED)
        self._core.check_open()

    def resolve(
        self, keys: Iterable[ResourceKey], *, strict: bool = True, retry_errors: bool = False
    ) -> Snapshot:
        """Blocking :meth:`SnapshotSession.resolve`.

        Raises:
            SnapshotBuildError, TypeError, ValueError: as the async method.
            RuntimeError: the session or the facade is closed, or called from a thread
                running an event loop.
        """
        self._check_open()
        return self._core.call(
            self._session.resolve, keys, strict=strict, retry_errors=retry_errors
        )

    def resolve_request(self, request: SnapshotRequest, *, retry_errors: bool = False) -> Snapshot:
        """Blocking :meth:`SnapshotSession.resolve_request`.

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, TypeError: as the async method.
                RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._core.call(self._session.resolve_request, request, retry_errors=retry_errors)

    def try_resolve_request(
        self,
        request: SnapshotRequest,
        *,
        retry_errors: bool = False,
        degradation_policy: RequestDegradationPolicy | None = None,
    ) -> SnapshotResult:
        """Blocking :meth:`SnapshotSession.try_resolve_request`.

        Raises:
            TypeError: as the async method. RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._core.call(
            self._session.try_resolve_request,
            request,
            retry_errors=retry_errors,
            degradation_policy=degradation_policy,
        )

    def revalidate(
        self,
        keys: Iterable[ResourceKey],
        *,
        strict: bool = True,
        force_refresh: bool = False,
        consistency_policy: SnapshotConsistencyPolicy | None = None,
        acceptance_policy: SnapshotAcceptancePolicy | None = None,
    ) -> Snapshot:
        """Blocking :meth:`SnapshotSession.revalidate` (transactional).

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, TypeError, ValueError: as the async
                method. RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._core.call(
            self._session.revalidate,
            keys,
            strict=strict,
            force_refresh=force_refresh,
            consistency_policy=consistency_policy,
            acceptance_policy=acceptance_policy,
        )

    def snapshot(self) -> Snapshot:
        """Everything pinned so far plus the remembered errors (read on the loop thread, where
        the session's stages run; copied like :meth:`SnapshotSession.snapshot_async`).

        Raises:
            RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._core.call(self._session.snapshot_async)

    def close(self) -> None:
        """Close the session. Idempotent; a no-op once the facade is closed (the session
        closed with it).

        Raises:
            RuntimeError: called from a thread running an event loop.
        """
        if self._closed:
            return
        self._closed = True
        if self._core.closed:
            return
        # ClosedError here means the facade closed meanwhile, and the session with it.
        with contextlib.suppress(ClosedError):
            self._core.call(self._session.close)

    def __enter__(self) -> SyncSnapshotSession:
        self._check_open()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()
