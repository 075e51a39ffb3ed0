"""The names of every metric, label and event the library emits: coalestra 0.5.7's published
ones, so dashboards and alerts carry over. Declared once here; :mod:`._instrumentation` is the
only module that hands them to sinks.

Metric labels are only resource types (``resource_namespace``, ``resource_name``), configured
source names and small enumerations (:data:`ALLOWED_LABELS`); full identity goes to events.
Observations are each labelled ``source``.
"""

from __future__ import annotations

from typing import Final, TypeAlias

KeyType: TypeAlias = tuple[str, str]
"""A resource type: ``(namespace, name)`` of a key."""

# Counters.
SNAPSHOT_BUILD_TOTAL: Final = "snapshot_build_total"
SESSION_RESOLVE_TOTAL: Final = "snapshot_session_resolve_total"
SESSION_REVALIDATE_TOTAL: Final = "snapshot_session_revalidate_total"
CONSISTENCY_TOTAL: Final = "snapshot_consistency_total"
ACCEPTANCE_TOTAL: Final = "snapshot_acceptance_total"
ACCEPTANCE_VIOLATION_TOTAL: Final = "snapshot_acceptance_violation_total"
TRY_REQUEST_TOTAL: Final = "snapshot_try_request_total"
CACHE_ACCESS_TOTAL: Final = "cache_access_total"
SOURCE_FETCH_TOTAL: Final = "source_fetch_total"
SOURCE_BATCH_CALL_TOTAL: Final = "source_batch_call_total"
SOURCE_CAPACITY_TIMEOUT_TOTAL: Final = "source_capacity_timeout_total"
SINGLEFLIGHT_JOIN_TOTAL: Final = "singleflight_join_total"
RESOURCE_REFRESH_TOTAL: Final = "resource_refresh_total"
RESOURCE_PUBLISH_TOTAL: Final = "resource_publish_total"
RESOURCE_INVALIDATION_TOTAL: Final = "resource_invalidation_total"
# Declared transport timeouts of blocking sources (0.6): labelled source + reason / outcome.
TRANSPORT_BUDGET_REJECTION_TOTAL: Final = "source_transport_budget_rejection_total"
TRANSPORT_TIMEOUT_VIOLATION_TOTAL: Final = "source_transport_timeout_violation_total"
# Observations.
SOURCE_FETCH_LATENCY_MS: Final = "source_fetch_latency_ms"
SOURCE_CAPACITY_WAIT_MS: Final = "source_capacity_wait_ms"
SOURCE_BATCH_SIZE: Final = "source_batch_size"

COUNTERS: Final = (
    SNAPSHOT_BUILD_TOTAL,
    SESSION_RESOLVE_TOTAL,
    SESSION_REVALIDATE_TOTAL,
    CONSISTENCY_TOTAL,
    ACCEPTANCE_TOTAL,
    ACCEPTANCE_VIOLATION_TOTAL,
    TRY_REQUEST_TOTAL,
    CACHE_ACCESS_TOTAL,
    SOURCE_FETCH_TOTAL,
    SOURCE_BATCH_CALL_TOTAL,
    SOURCE_CAPACITY_TIMEOUT_TOTAL,
    SINGLEFLIGHT_JOIN_TOTAL,
    RESOURCE_REFRESH_TOTAL,
    RESOURCE_PUBLISH_TOTAL,
    RESOURCE_INVALIDATION_TOTAL,
    TRANSPORT_BUDGET_REJECTION_TOTAL,
    TRANSPORT_TIMEOUT_VIOLATION_TOTAL,
)
OBSERVATIONS: Final = (SOURCE_FETCH_LATENCY_MS, SOURCE_CAPACITY_WAIT_MS, SOURCE_BATCH_SIZE)

# Label names: the complete list; nothing else ever becomes a label.
LABEL_NAMESPACE: Final = "resource_namespace"
LABEL_NAME: Final = "resource_name"
LABEL_SOURCE: Final = "source"
LABEL_STATUS: Final = "status"
LABEL_REASON: Final = "reason"
LABEL_RULE: Final = "rule"
LABEL_OUTCOME: Final = "outcome"
ALLOWED_LABELS: Final = frozenset(
    {
        LABEL_NAMESPACE,
        LABEL_NAME,
        LABEL_SOURCE,
        LABEL_STATUS,
        LABEL_REASON,
        LABEL_RULE,
        LABEL_OUTCOME,
    }
)
ANY: Final = "*"
"""Label value for "builder-wide" (used by the Prometheus health collector)."""

# Statuses of cache_access_total.
FRESH: Final = "fresh"
STALE_WHILE_REVALIDATE: Final = "stale_while_revalidate"
MISS: Final = "miss"
STALE_FALLBACK: Final = "stale_fallback"
REVALIDATION_BYPASS: Final = "revalidation_bypass"

# Events.
EVENT_SNAPSHOT_BUILT: Final = "snapshot_built"
EVENT_SESSION_RESOLVED: Final = "snapshot_session_resolved"
EVENT_SESSION_REVALIDATED: Final = "snapshot_session_revalidated"
EVENT_CONSISTENCY_FAILED: Final = "snapshot_consistency_failed"
EVENT_ACCEPTANCE_FAILED: Final = "snapshot_acceptance_failed"
EVENT_TRY_REQUEST_RESOLVED: Final = "snapshot_try_request_resolved"
EVENT_CACHE_HIT: Final = "cache_hit"
EVENT_CACHE_BYPASSED: Final = "cache_bypassed"
EVENT_STALE_FALLBACK: Final = "stale_fallback_used"
EVENT_RESOLVED: Final = "resource_resolved"
EVENT_SOURCE_FAILED: Final = "source_failed"
EVENT_PAYLOAD_REJECTED: Final = "source_payload_rejected"
EVENT_CIRCUIT_OPEN: Final = "source_circuit_open"
EVENT_REFRESH_SCHEDULED: Final = "resource_refresh_scheduled"
EVENT_REFRESH_COMPLETED: Final = "resource_refresh_completed"
EVENT_REFRESH_FAILED: Final = "resource_refresh_failed"
EVENT_PUBLISHED: Final = "resource_published"
EVENT_PUBLISH_IGNORED: Final = "resource_publish_ignored"
EVENT_INVALIDATED: Final = "resource_invalidated"
EVENT_DISPATCH_UNDER_DEADLINE_PRESSURE: Final = "source_dispatch_under_deadline_pressure"
EVENT_TRANSPORT_BUDGET_REJECTED: Final = "source_transport_budget_rejected"
EVENT_TRANSPORT_TIMEOUT_VIOLATED: Final = "source_transport_timeout_violated"
