"""Blocking multi-stage sessions: :class:`SyncSnapshotSession`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, final

from ..core import (
    ResourceKey,
    SessionClosedError,
    Snapshot,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
)
from ..orchestration import SnapshotSession
from ._core import run_sync
from ._publisher import owner_core

if TYPE_CHECKING:
    from ._builder import SyncSnapshotBuilder


@final
class SyncSnapshotSession:
    """A :class:`SnapshotSession` for synchronous code, run on its owner's event loop.

    Every method blocks until the session's coroutine has finished on the owner's loop, with
    the semantics of the async session (pinning, remembered errors, transactional
    revalidation). Create it with :meth:`SyncSnapshotBuilder.session`.

    Args:
        owner: the facade whose loop runs the session.
        session: the async session, created by the owner's builder.

    Raises:
        TypeError: ``owner`` or ``session`` has the wrong type.
    """

    __slots__ = ("_core", "_session")

    def __init__(self, owner: SyncSnapshotBuilder, session: SnapshotSession) -> None:
        self._core = owner_core(owner)
        if not isinstance(session, SnapshotSession):
            raise TypeError(f"session must be a SnapshotSession, got {type(session).__name__}")
        self._session = session

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
        return self._session.closed or self._core.closed

    def resolve(
        self, keys: Iterable[ResourceKey], *, strict: bool = True, retry_errors: bool = False
    ) -> Snapshot:
        """Blocking :meth:`SnapshotSession.resolve`.

        Raises:
            SnapshotBuildError, SessionClosedError, TypeError: as the async method.
            RuntimeError: called from a thread running an event loop.
        """
        return self._core.call(
            self._session.resolve, keys, strict=strict, retry_errors=retry_errors
        )

    def resolve_request(self, request: SnapshotRequest, *, retry_errors: bool = False) -> Snapshot:
        """Blocking :meth:`SnapshotSession.resolve_request`.

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, SessionClosedError, TypeError,
                ValueError: as the async method. RuntimeError: as :meth:`resolve`.
        """
        return self._core.call(self._session.resolve_request, request, retry_errors=retry_errors)

    def revalidate(
        self,
        keys: Iterable[ResourceKey],
        *,
        strict: bool = True,
        force_refresh: bool = False,
        consistency_policy: SnapshotConsistencyPolicy | None = None,
    ) -> Snapshot:
        """Blocking :meth:`SnapshotSession.revalidate` (transactional).

        Raises:
            SnapshotBuildError, SnapshotConsistencyError, SessionClosedError, TypeError: as
                the async method. RuntimeError: as :meth:`resolve`.
        """
        return self._core.call(
            self._session.revalidate,
            keys,
            strict=strict,
            force_refresh=force_refresh,
            consistency_policy=consistency_policy,
        )

    def snapshot(self) -> Snapshot:
        """Everything pinned so far plus the remembered errors (read on the loop thread, where
        the session's stages run).

        Raises:
            SessionClosedError: the session, its builder or the facade is closed.
            RuntimeError: as :meth:`resolve`.
        """
        return self._core.call(run_sync, self._session.snapshot)

    def close(self) -> None:
        """Close the session. Idempotent; a no-op once the facade is closed (the session
        closed with it).

        Raises:
            RuntimeError: called from a thread running an event loop.
        """
        if self._core.closed:
            return
        # SessionClosedError here means the facade closed meanwhile, and the session with it.
        with contextlib.suppress(SessionClosedError):
            self._core.call(self._session.close)

    def __enter__(self) -> SyncSnapshotSession:
        if self.closed:
            raise SessionClosedError(f"session {self.snapshot_id!r} is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
