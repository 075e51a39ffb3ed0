"""Building snapshots: the builder, sessions, freshness policies, single-flight, and cached
functions."""

from ._builder import SnapshotBuilder
from ._cached import CachedFunction, CachedReader, SyncCachedReader, cached
from ._policy import PolicyResolver
from ._session import SnapshotSession
from ._trying import (
    install_operational_methods,
    try_build_request,
    try_build_requests,
    try_resolve_request,
)

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
