"""Prometheus names: the namespace check, the engine-name mapping and the help texts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from ...core._validation import ReadOnlyDict
from ...observability import _instrumentation as names

CORE_PREFIX: Final = "coalestra_"
"""The prefix of every metric name the engine emits; replaced by the sink's namespace."""
FAILURES_METRIC: Final = "coalestra_metrics_sink_failures_total"
"""The sink's own counter of calls it could not record (exposed under its namespace)."""

_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")

HELP: Final[Mapping[str, str]] = ReadOnlyDict(
    {
        names.BUILDS_TOTAL: "Builds finished, by outcome (complete, partial, failed).",
        names.BUILD_DURATION_SECONDS: "Duration of builds in seconds, by outcome.",
        names.CACHE_HITS_TOTAL: "Keys served from the cache, by resource type.",
        names.CACHE_MISSES_TOTAL: "Keys the cache could not serve, by resource type.",
        names.CACHE_STALE_TOTAL: "Stale keys served from the cache, by resource type.",
        names.SOURCE_CALLS_TOTAL: "Source call attempts, by source, outcome and resource type.",
        names.SOURCE_CALL_DURATION_SECONDS: "Duration of source call attempts in seconds.",
        names.RETRIES_TOTAL: "Source call retries scheduled, by source.",
        names.CIRCUIT_TRANSITIONS_TOTAL: "Circuit breaker state changes, by source and scope.",
        names.SINGLEFLIGHT_JOINS_TOTAL: "Keys a build joined from another build's flight.",
        names.CAPACITY_WAIT_SECONDS: "Time source calls waited for a capacity slot, in seconds.",
        names.REFRESHES_TOTAL: "Background refreshes, by outcome and resource type.",
        names.PUBLICATIONS_TOTAL: "Pushed values, by source, status and resource type.",
        names.INVALIDATIONS_TOTAL: "Cache invalidations, by resource type.",
        FAILURES_METRIC: "Metric calls the Prometheus sink could not record (see its log).",
    }
)


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
    """The exposed name of an engine metric: ``coalestra_`` becomes ``<namespace>_``.

    Names from other callers get the namespace prepended; characters Prometheus rejects become
    ``_``, so a sloppy name still yields a metric rather than a failure.
    """
    base = metric.removeprefix(CORE_PREFIX)
    base = _INVALID.sub("_", base)
    return f"{namespace}_{base}" if namespace else base


def help_text(metric: str) -> str:
    """The HELP line of ``metric``: a fixed description for the engine's metrics."""
    return HELP.get(metric) or f"Coalestra metric {metric}."
