"""The 0.6 module-level entry points of non-throwing request builds: ``try_resolve_request``,
``try_build_request`` and ``try_build_requests`` call the session's and the builder's methods
of the same names (see :mod:`._trying` for what they do)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..core import RequestDegradationPolicy, SnapshotRequest, SnapshotResult
from ._builder import SnapshotBuilder
from ._session import SnapshotSession


async def try_resolve_request(
    session: SnapshotSession,
    request: SnapshotRequest,
    *,
    retry_errors: bool = False,
    degradation_policy: RequestDegradationPolicy | None = None,
) -> SnapshotResult:
    """Resolve ``request`` as a stage of ``session`` without raising for failed keys, an
    inconsistent group or rejected values: return a :class:`SnapshotResult` instead.

    Raises:
        TypeError: a bad argument. Errors other than :class:`CoalestraError` propagate.
    """
    return await session.try_resolve_request(
        request, retry_errors=retry_errors, degradation_policy=degradation_policy
    )


async def try_build_request(
    builder: SnapshotBuilder,
    request: SnapshotRequest,
    *,
    deadline_seconds: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    snapshot_id: str | None = None,
    degradation_policy: RequestDegradationPolicy | None = None,
) -> SnapshotResult:
    """Like :func:`try_resolve_request`, in a session of its own (closed afterwards)."""
    return await builder.try_build_request(
        request,
        deadline_seconds=deadline_seconds,
        metadata=metadata,
        snapshot_id=snapshot_id,
        degradation_policy=degradation_policy,
    )


async def try_build_requests(
    builder: SnapshotBuilder,
    requests: Iterable[SnapshotRequest],
    *,
    deadline_seconds: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    snapshot_id_prefix: str | None = None,
    degradation_policy: RequestDegradationPolicy | None = None,
    max_concurrent: int | None = None,
) -> tuple[SnapshotResult, ...]:
    """:func:`try_build_request` for each request, at most ``max_concurrent`` at once; the
    results come in input order."""
    return await builder.try_build_requests(
        requests,
        deadline_seconds=deadline_seconds,
        metadata=metadata,
        snapshot_id_prefix=snapshot_id_prefix,
        degradation_policy=degradation_policy,
        max_concurrent=max_concurrent,
    )


def install_operational_methods() -> None:
    """Kept for 0.6 compatibility: the ``try_*`` methods are ordinary methods here, so there is
    nothing to install. Idempotent."""
