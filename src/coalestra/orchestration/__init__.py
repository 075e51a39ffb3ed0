"""Building snapshots: the builder, sessions, freshness policies and single-flight."""

from ._builder import SnapshotBuilder
from ._policy import PolicyResolver
from ._session import SnapshotSession

__all__ = ["PolicyResolver", "SnapshotBuilder", "SnapshotSession"]
