"""Blocking multi-stage sessions: :class:`SyncSnapshotSession`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, final

from ..core._closed import SYNC_SESSION_CLOSED, ClosedError
from ..orchestration import SnapshotSession
from ._blocking import blocking
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

    def _target(self) -> SnapshotSession:
        """The async session the blocking methods run on, once this one is known to be open."""
        self._check_open()
        return self._session

    resolve = blocking(
        SnapshotSession.resolve,
        """Blocking :meth:`SnapshotSession.resolve`.

        Raises:
            SnapshotBuildError, TypeError, ValueError: as the async method.
            RuntimeError: the session or the facade is closed, or called from a thread
                running an event loop.
        """,
    )
    resolve_request = blocking(
        SnapshotSession.resolve_request,
        """Blocking :meth:`SnapshotSession.resolve_request`.

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, TypeError: as the async method.
                RuntimeError: as :meth:`resolve`.
        """,
    )
    try_resolve_request = blocking(
        SnapshotSession.try_resolve_request,
        """Blocking :meth:`SnapshotSession.try_resolve_request`.

        Raises:
            TypeError: as the async method. RuntimeError: as :meth:`resolve`.
        """,
    )
    revalidate = blocking(
        SnapshotSession.revalidate,
        """Blocking :meth:`SnapshotSession.revalidate` (transactional).

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, TypeError, ValueError: as the async
                method. RuntimeError: as :meth:`resolve`.
        """,
    )
    snapshot = blocking(
        SnapshotSession.snapshot_async,
        """Everything pinned so far plus the remembered errors (read on the loop thread, where
        the session's stages run; copied like :meth:`SnapshotSession.snapshot_async`).

        Raises:
            RuntimeError: as :meth:`resolve`.
        """,
    )

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
