"""Building snapshots: the builder, sessions, freshness policies, single-flight, and cached
functions."""

from ._builder import SnapshotBuilder
from ._cached import CachedFunction, CachedReader, SyncCachedReader, cached
from ._entry_points import (
    install_operational_methods,
    try_build_request,
    try_build_requests,
    try_resolve_request,
)
from ._policy import PolicyResolver
from ._session import SnapshotSession

__all__ = [
    "CachedFunction",
    "CachedReader",
    "PolicyResolver",
    "SnapshotBuilder",
    "SnapshotSession",
    "SyncCachedReader",
    "cached",
    "install_operational_methods",
    "try_build_request",
    "try_build_requests",
    "try_resolve_request",
]
