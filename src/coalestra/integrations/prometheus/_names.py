"""Prometheus names: the namespace check, the engine-name mapping and the help texts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry

from ...core._validation import ReadOnlyDict
from ...observability import _names as names

CORE_PREFIX: Final = "coalestra_"
"""A prefix replaced by the sink's namespace (the sink's own metric carries it)."""
FAILURES_METRIC: Final = "coalestra_metrics_sink_failures_total"
"""The sink's own counter of calls it could not record (exposed under its namespace)."""

_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")

HELP: Final[Mapping[str, str]] = ReadOnlyDict(
    {
        names.SNAPSHOT_BUILD_TOTAL: "Builds finished, by status (success, error).",
        names.SESSION_RESOLVE_TOTAL: "Session stages (builds included), by status.",
        names.SESSION_REVALIDATE_TOTAL: "Session revalidations, by status.",
        names.CONSISTENCY_TOTAL: "Snapshot consistency checks that failed, by rule.",
        names.ACCEPTANCE_TOTAL: "Snapshot acceptance evaluations, by status.",
        names.ACCEPTANCE_VIOLATION_TOTAL: "Rejected snapshots, once per distinct reason.",
        names.TRY_REQUEST_TOTAL: "Non-throwing request builds, by result state.",
        names.CACHE_ACCESS_TOTAL: "Keys looked up in the cache, by status and resource type.",
        names.SOURCE_FETCH_TOTAL: "Keys fetched from sources, by source and status.",
        names.SOURCE_BATCH_CALL_TOTAL: "Batch source calls, by source and status.",
        names.SOURCE_CAPACITY_TIMEOUT_TOTAL: "Source calls that got no capacity slot, by reason.",
        names.SINGLEFLIGHT_JOIN_TOTAL: "Keys a build joined from another build's flight.",
        names.RESOURCE_REFRESH_TOTAL: "Background refreshes, by status and resource type.",
        names.RESOURCE_PUBLISH_TOTAL: "Pushed values, by source, status and resource type.",
        names.RESOURCE_INVALIDATION_TOTAL: "Cache invalidations, by resource type.",
        names.TRANSPORT_BUDGET_REJECTION_TOTAL: (
            "Blocking-source calls not started: transport timeout beyond the budget, by reason."
        ),
        names.TRANSPORT_TIMEOUT_VIOLATION_TOTAL: (
            "Blocking-source calls that overran their transport timeout, by outcome."
        ),
        names.SOURCE_FETCH_LATENCY_MS: "Duration of source call attempts in milliseconds.",
        names.SOURCE_CAPACITY_WAIT_MS: "Time source calls waited for a capacity slot, in ms.",
        names.SOURCE_BATCH_SIZE: "Keys per batch source call.",
        FAILURES_METRIC: "Metric calls the Prometheus sink could not record (see its log).",
    }
)

_MILLISECONDS: Final = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
_MILLISECONDS_LONG: Final = (*_MILLISECONDS, 5000.0, 10000.0)
_SIZES: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
DEFAULT_BUCKETS: Final[Mapping[str, tuple[float, ...]]] = ReadOnlyDict(
    {
        names.SOURCE_FETCH_LATENCY_MS: _MILLISECONDS_LONG,
        names.SOURCE_CAPACITY_WAIT_MS: _MILLISECONDS_LONG,
        names.SOURCE_BATCH_SIZE: _SIZES,
    }
)
"""Histogram bounds of the engine's observations, in their own units (ms, keys)."""


def check_registry(registry: object) -> CollectorRegistry:
    """Return ``registry``, or the default ``REGISTRY`` for ``None``.

    Raises:
        TypeError: ``registry`` is not a ``CollectorRegistry``.
    """
    if registry is None:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a CollectorRegistry, got {type(registry).__name__}")
    return registry


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is ``""`` or a valid Prometheus metric name prefix.

    Raises:
        TypeError: ``namespace`` is not a string.
        ValueError: it contains characters Prometheus does not allow in metric names.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    if namespace and not _NAMESPACE.match(namespace):
        raise ValueError(
            f"namespace must match [a-zA-Z_:][a-zA-Z0-9_:]* (or be empty), got {namespace!r}"
        )
    return namespace


def prometheus_name(metric: str, namespace: str) -> str:
    """The exposed name of a metric: ``<namespace>_<metric>`` (``snapshot_build_total`` becomes
    ``coalestra_snapshot_build_total``); a leading ``coalestra_`` is replaced by the namespace.

    Characters Prometheus rejects become ``_``, so a sloppy name still yields a metric rather
    than a failure.
    """
    base = metric.removeprefix(CORE_PREFIX)
    base = _INVALID.sub("_", base)
    return f"{namespace}_{base}" if namespace else base


def help_text(metric: str) -> str:
    """The HELP line of ``metric``: a fixed description for the engine's metrics."""
    return HELP.get(metric) or f"Coalestra metric {metric}."
