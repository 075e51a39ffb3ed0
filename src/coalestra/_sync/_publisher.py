"""Blocking and non-blocking publication for synchronous code: :class:`SyncResourcePublisher`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, final

from ..cache import PublishResult, ResourcePublisher, ResourceUpdate
from ..core import PayloadIsolator, ResourceKey
from ._blocking import blocking
from ._core import BacklogView, FacadeCore

if TYPE_CHECKING:
    # The builder by what these objects use of it (see FacadeOwner): no import circle.
    from ._core import FacadeOwner as SyncSnapshotBuilder


def owner_core(owner: object) -> FacadeCore:
    """The facade state behind ``owner``.

    Raises:
        TypeError: ``owner`` is not a SyncSnapshotBuilder.
    """
    core = getattr(owner, "_core", None)
    if not isinstance(core, FacadeCore):
        raise TypeError(f"owner must be a SyncSnapshotBuilder, got {type(owner).__name__}")
    return core


def _collection(name: str, value: object) -> Collection[Any]:
    if not isinstance(value, Collection) or isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be a collection, got {type(value).__name__}")
    return value


def _captured_metadata(
    isolator: PayloadIsolator, metadata: object, context: str
) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    return isolator.copy_metadata(metadata, context=context)


def _captured_update(isolator: PayloadIsolator, update: object) -> ResourceUpdate[Any]:
    if not isinstance(update, ResourceUpdate):
        raise TypeError(f"updates item must be a ResourceUpdate, got {type(update).__name__}")
    context = f"submission of {update.key}"
    return ResourceUpdate(
        update.key,
        isolator.copy(update.value, context=context),
        update.source,
        update.observed_at,
        isolator.copy_metadata(update.metadata, context=context),
    )


@final
class SyncResourcePublisher(BacklogView):
    """A :class:`ResourcePublisher` for synchronous code, driven by a
    :class:`SyncSnapshotBuilder`'s loop.

    Blocking methods wait for the outcome. ``submit_*`` methods return at once with a
    :class:`concurrent.futures.Future`; their arguments (values, nested metadata, update and
    key collections) are copied before they return, so later mutation by the producer changes
    nothing accepted. Accepted submissions are bounded by the owner's
    ``max_pending_submissions``: beyond it :class:`SubmissionBacklogFullError` is raised at
    once (a producer is never blocked). An operation's own exception is set on its future.

    Args:
        owner: the facade whose loop and backlog to use.
        publisher: the publisher to drive (normally ``builder.publisher``).

    Raises:
        TypeError: ``owner`` or ``publisher`` has the wrong type.
    """

    __slots__ = ("_core", "_owner", "_publisher")

    def __init__(self, owner: SyncSnapshotBuilder, publisher: ResourcePublisher) -> None:
        self._core = owner_core(owner)
        if not isinstance(publisher, ResourcePublisher):
            raise TypeError(f"publisher must be a ResourcePublisher, got {type(publisher)}")
        self._owner = owner
        self._publisher = publisher

    def flush(self, *, timeout_seconds: float | None = None) -> None:
        """Wait for the submissions accepted before this call (see
        :meth:`SyncSnapshotBuilder.flush_submissions`).

        Raises:
            TimeoutError, TypeError, ValueError, RuntimeError: as ``flush_submissions``.
        """
        self._core.flush(timeout_seconds)

    def _target(self) -> ResourcePublisher:
        """The publisher the blocking methods run on (the core checks that the facade is open)."""
        return self._publisher

    # -- blocking ----------------------------------------------------------------------------

    publish = blocking(
        ResourcePublisher.publish,
        """Blocking :meth:`ResourcePublisher.publish`.

        Raises:
            TypeError, ValueError, SourceProtocolError, PayloadIsolationError: as the async
                method. RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"),
                or called from a thread running an event loop.
        """,
    )
    publish_update = blocking(
        ResourcePublisher.publish_update,
        """Blocking :meth:`ResourcePublisher.publish_update` (raises as :meth:`publish`).""",
    )
    publish_many = blocking(
        ResourcePublisher.publish_many,
        """Blocking :meth:`ResourcePublisher.publish_many` (raises as :meth:`publish`).""",
    )
    invalidate = blocking(
        ResourcePublisher.invalidate,
        """Blocking :meth:`ResourcePublisher.invalidate`.

        Raises:
            TypeError: a bad key or reason. RuntimeError: as :meth:`publish`.
        """,
    )
    invalidate_many = blocking(
        ResourcePublisher.invalidate_many,
        """Blocking :meth:`ResourcePublisher.invalidate_many` (raises as :meth:`invalidate`).""",
    )

    # -- non-blocking ------------------------------------------------------------------------

    def submit_publish(
        self,
        key: ResourceKey,
        value: Any,
        *,
        source: str,
        observed_at: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Future[PublishResult]:
        """Submit the publication without waiting; ``value`` and ``metadata`` are copied now.
        On the loop it runs as ``builder.publisher.publish_update``.

        Raises:
            SubmissionBacklogFullError: the backlog is full (nothing was accepted).
            RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed").
            PayloadIsolationError: ``value`` or ``metadata`` cannot be copied.
            TypeError: ``metadata`` is not a mapping. Other invalid arguments are reported
                by the future.
        """
        self._core.check_open()
        context = f"submission of {key}"
        isolator = self._core.isolator
        return self._core.submit(
            self._publish_update,
            key,
            isolator.copy(value, context=context),
            source,
            observed_at,
            _captured_metadata(isolator, metadata, context),
            force=force,
            replace_equal=replace_equal,
        )

    async def _publish_update(
        self,
        key: ResourceKey,
        value: Any,
        source: str,
        observed_at: float | None,
        metadata: Mapping[str, Any] | None,
        *,
        force: bool,
        replace_equal: bool,
    ) -> PublishResult:
        # Built on the loop, so an invalid argument is reported by the future, as documented.
        update = ResourceUpdate(key, value, source, observed_at, metadata or {})
        return await self._publisher.publish_update(
            update, force=force, replace_equal=replace_equal
        )

    def submit_publish_update(
        self, update: ResourceUpdate[Any], *, force: bool = False, replace_equal: bool = False
    ) -> Future[PublishResult]:
        """Submit :meth:`publish_update` without waiting; the update is copied now.

        Raises:
            TypeError: ``update`` is not a ResourceUpdate; otherwise as
                :meth:`submit_publish`.
        """
        self._core.check_open()
        captured = _captured_update(self._core.isolator, update)
        return self._core.submit(
            self._publisher.publish_update, captured, force=force, replace_equal=replace_equal
        )

    def submit_publish_many(
        self,
        updates: Collection[ResourceUpdate[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Future[Mapping[ResourceKey, PublishResult]]:
        """Submit :meth:`publish_many` without waiting; the collection and every update in it
        are copied now.

        Raises:
            TypeError: ``updates`` is not a collection of ResourceUpdate; otherwise as
                :meth:`submit_publish`.
        """
        self._core.check_open()
        isolator = self._core.isolator
        captured = tuple(
            _captured_update(isolator, update) for update in _collection("updates", updates)
        )
        return self._core.submit(
            self._publisher.publish_many, captured, force=force, replace_equal=replace_equal
        )

    def submit_invalidate(self, key: ResourceKey, *, reason: str = "") -> Future[None]:
        """Submit :meth:`invalidate` without waiting.

        Raises:
            SubmissionBacklogFullError, RuntimeError: as :meth:`submit_publish`.
        """
        self._core.check_open()
        return self._core.submit(self._publisher.invalidate, key, reason=reason)

    def submit_invalidate_many(
        self, keys: Collection[ResourceKey], *, reason: str = ""
    ) -> Future[None]:
        """Submit :meth:`invalidate_many` without waiting; ``keys`` is copied now.

        Raises:
            TypeError: ``keys`` is not a collection; otherwise as :meth:`submit_publish`.
        """
        self._core.check_open()
        captured = tuple(_collection("keys", keys))
        return self._core.submit(self._publisher.invalidate_many, captured, reason=reason)
