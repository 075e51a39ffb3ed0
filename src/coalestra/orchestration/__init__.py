"""Building snapshots: the builder, sessions, freshness policies and single-flight."""

from ._builder import SnapshotBuilder
from ._policy import PolicyResolver
from ._session import SnapshotSession
from ._trying import (
    install_operational_methods,
    try_build_request,
    try_build_requests,
    try_resolve_request,
)

__all__ = [
    "PolicyResolver",
    "SnapshotBuilder",
    "SnapshotSession",
    "install_operational_methods",
    "try_build_request",
    "try_build_requests",
    "try_resolve_request",
]
