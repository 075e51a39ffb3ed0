"""Persistent synchronous facades for applications without an event loop.

:class:`SyncSnapshotBuilder` owns one event-loop thread for the application's lifetime and runs
a :class:`~coalestra.orchestration.SnapshotBuilder` there; :class:`SyncSnapshotSession` and
:class:`SyncResourcePublisher` are its blocking (and, for publication, bounded non-blocking)
counterparts of sessions and the publisher.
"""

from ._sync._builder import SyncSnapshotBuilder
from ._sync._publisher import SyncResourcePublisher
from ._sync._session import SyncSnapshotSession

__all__ = ["SyncResourcePublisher", "SyncSnapshotBuilder", "SyncSnapshotSession"]
