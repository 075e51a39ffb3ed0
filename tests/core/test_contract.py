# ruff: noqa: E501  (contract signatures are copied verbatim, one per line)
"""The core's public surface against spec/public-api.md (copied here: tests never read ../shared).

Names, constructor and method signatures, dataclass fields, enum members and constants are part
of the contract; a change here is an API break.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any

import pytest
from tests.test_public_api import ADDITIONS, SUBPACKAGE_EXPORTS

import coalestra.core as core

# The list of core names lives once, in the manifest test.
CORE_NAMES = sorted(SUBPACKAGE_EXPORTS["coalestra.core"])

# (name, method or None for the constructor, signature) exactly as the contract prints them.
SIGNATURES: list[tuple[str, str | None, str]] = [
    ("AsyncCache", "clear", "(self) -> 'None'"),
    (
        "AsyncCache",
        "get",
        "(self, key: 'ResourceKey', *, now: 'float', policy: 'FreshnessPolicy') -> 'CacheLookup'",
    ),
    ("AsyncCache", "invalidate", "(self, key: 'ResourceKey') -> 'None'"),
    ("AsyncCache", "set", "(self, value: 'SnapshotValue[Any]') -> 'None'"),
    (
        "AtomicAsyncCache",
        "set_if_newer",
        "(self, value: 'SnapshotValue[Any]', *, force: 'bool' = False, replace_equal: 'bool' = False) -> 'CacheWriteResult'",
    ),
    ("AuthorityPolicyProvider", "rank_for", "(self, key: 'ResourceKey', source: 'str') -> 'int'"),
    ("AuthorityPolicyProvider", "resolve", "(self, key: 'ResourceKey') -> 'SourceAuthorityPolicy'"),
    (
        "AuthorityPolicyResolver",
        None,
        "(default: 'SourceAuthorityPolicy | None' = None, overrides: 'Mapping[ResourceKey, SourceAuthorityPolicy] | None' = None, dynamic: 'AuthorityResolver | None' = None) -> 'None'",
    ),
    ("AuthorityPolicyResolver", "rank_for", "(self, key: 'ResourceKey', source: 'str') -> 'int'"),
    ("AuthorityPolicyResolver", "resolve", "(self, key: 'ResourceKey') -> 'SourceAuthorityPolicy'"),
    (
        "BatchAsyncCache",
        "get_many",
        "(self, keys: 'Collection[ResourceKey]', *, now: 'float', policies: 'Mapping[ResourceKey, FreshnessPolicy]') -> 'Mapping[ResourceKey, CacheLookup]'",
    ),
    ("BatchAsyncCache", "invalidate_many", "(self, keys: 'Collection[ResourceKey]') -> 'None'"),
    ("BatchAsyncCache", "set_many", "(self, values: 'Collection[SnapshotValue[Any]]') -> 'None'"),
    (
        "BatchAtomicAsyncCache",
        "set_many_if_newer",
        "(self, values: 'Collection[SnapshotValue[Any]]', *, force: 'bool' = False, replace_equal: 'bool' = False) -> 'Mapping[ResourceKey, CacheWriteResult]'",
    ),
    (
        "BatchSnapshotSource",
        "fetch_many",
        "(self, keys: 'Collection[ResourceKey]', context: 'FetchContext') -> 'Mapping[ResourceKey, SourcePayload[Any]]'",
    ),
    (
        "BuilderHealth",
        None,
        "(closed: 'bool', background_refreshes: 'int', singleflight_in_flight: 'int', source_support_cache_entries: 'int', capacity: 'Mapping[str, Any]' = <factory>, cache: 'Any | None' = None, circuits: 'Mapping[Any, Any]' = <factory>, active_dispatch_workers: 'int' = 0, waiting_for_capacity: 'int' = 0, queue_timeout_count: 'int' = 0, source_timeout_count: 'int' = 0, deadline_exceeded_count: 'int' = 0, revalidation_attempt_count: 'int' = 0, revalidation_failure_count: 'int' = 0, pending_submissions: 'int' = 0, max_pending_submissions: 'int | None' = None"
        # 0.6 additions, appended after the 0.5.7 fields (public-api-0.6.md section 2, B3)
        ", source_timeout_guarantees: 'Mapping[str, Any]' = <factory>, blocking_source_count: 'int' = 0, protected_blocking_source_count: 'int' = 0, unsafe_blocking_source_count: 'int' = 0, undeclared_source_timeout_count: 'int' = 0, source_transport_timeout_violation_count: 'int' = 0, source_transport_timeout_violations: 'Mapping[str, int]' = <factory>, payload_copy_components: 'Mapping[str, Any]' = <factory>, active_payload_copies: 'int' = 0, waiting_for_copy_capacity: 'int' = 0, payload_copy_started_count: 'int' = 0, payload_copy_completed_count: 'int' = 0, payload_copy_failure_count: 'int' = 0, payload_copy_timeout_count: 'int' = 0, payload_copy_capacity_timeout_count: 'int' = 0, payload_copy_shutdown_incomplete: 'bool' = False, payload_copy_shutdown_timeout_count: 'int' = 0, payload_copy_active_at_last_shutdown_timeout: 'int' = 0, observability_buffers: 'Mapping[str, Any]' = <factory>, observability_pending: 'int' = 0, observability_peak_pending: 'int' = 0, observability_dropped_count: 'int' = 0, observability_failure_count: 'int' = 0, observability_shutdown_incomplete: 'bool' = False, observability_shutdown_timeout_count: 'int' = 0) -> None",
    ),
    (
        "CacheLookup",
        None,
        "(value: 'SnapshotValue[Any] | None', fresh: 'bool', usable_stale: 'bool', age_seconds: 'float | None' = None) -> None",
    ),
    (
        "CacheWriteResult",
        None,
        "(status: 'CacheWriteStatus', value: 'SnapshotValue[Any]', previous: 'SnapshotValue[Any] | None' = None) -> None",
    ),
    ("DependencyCycleError", None, "(path: 'tuple[ResourceKey, ...]')"),
    (
        "DependencyResolutionError",
        None,
        "(key: 'ResourceKey', source: 'str', errors: 'Mapping[ResourceKey, Exception]') -> 'None'",
    ),
    ("DerivedSource", "dependencies", "(self, key: 'ResourceKey') -> 'Collection[ResourceKey]'"),
    (
        "DerivedSource",
        "derive",
        "(self, key: 'ResourceKey', dependencies: 'Snapshot', context: 'FetchContext') -> 'SourcePayload[Any]'",
    ),
    (
        "FetchContext",
        None,
        "(requested_at: 'float', deadline_at: 'float | None' = None, deadline_monotonic: 'float | None' = None, metadata: 'Mapping[str, Any]' = <factory>, snapshot_id: 'str' = '') -> None",
    ),
    (
        "FreshnessPolicy",
        None,
        "(ttl_seconds: 'float', max_stale_seconds: 'float' = 0.0, allow_stale_on_error: 'bool' = True, refresh_mode: 'RefreshMode' = <RefreshMode.BLOCKING: 'blocking'>, refresh_ahead_seconds: 'float' = 0.0) -> None",
    ),
    ("FreshnessPolicy", "should_refresh_ahead", "(self, age_seconds: 'float') -> 'bool'"),
    ("FreshnessPolicyProvider", "resolve", "(self, key: 'ResourceKey') -> 'FreshnessPolicy'"),
    (
        "ObservationPolicy",
        None,
        "(future_tolerance_seconds: 'float' = 1.0, reject_future_observations: 'bool' = True) -> None",
    ),
    ("PayloadIsolationError", None, "(*, context: 'str', value_type: 'str') -> 'None'"),
    ("PayloadIsolator", None, "(copier: 'PayloadCopier | None' = None) -> 'None'"),
    (
        "PayloadIsolator",
        "clone_snapshot_value",
        "(self, value: 'SnapshotValue[Any]', *, context: 'str', fetched_at: 'float | None' = None, age_seconds: 'float | None' = None, stale: 'bool | None' = None, from_cache: 'bool | None' = None, latency_ms: 'float | None' = None, metadata: 'Mapping[str, Any] | None' = None) -> 'SnapshotValue[Any]'",
    ),
    ("PayloadIsolator", "copy", "(self, value: 'T', *, context: 'str') -> 'T'"),
    (
        "PayloadIsolator",
        "copy_metadata",
        "(self, metadata: 'Mapping[str, Any]', *, context: 'str') -> 'dict[str, Any]'",
    ),
    (
        "ResourceKey",
        None,
        "(namespace: 'str', name: 'str', subject: 'str' = '', qualifiers: 'QualifierInput | None' = None, *, normalizer: 'KeyNormalizer | None' = None) -> 'None'",
    ),
    (
        "ResourceKey",
        "legacy",
        "(cls, namespace: 'str', name: 'str', subject: 'str' = '', qualifiers: 'QualifierInput | None' = None) -> 'ResourceKey'",
    ),
    ("ResourceKey", "normalized", "(self, normalizer: 'KeyNormalizer') -> 'ResourceKey'"),
    (
        "ResourceKey",
        "qualifier",
        "(self, name: 'str', default: 'str | None' = None) -> 'str | None'",
    ),
    (
        "ResourceKey",
        "with_qualifiers",
        "(self, qualifiers: 'QualifierInput | None' = None, **additional: 'Any') -> 'ResourceKey'",
    ),
    ("ResourceKey", "without_qualifiers", "(self, *names: 'str') -> 'ResourceKey'"),
    (
        "ResourceResolutionError",
        None,
        "(key: 'ResourceKey', failures: 'tuple[SourceFailure, ...]')",
    ),
    (
        "ResourceResolutionError",
        "format_failures",
        "(self, *, max_failures: 'int' = 3, max_message_length: 'int' = 300) -> 'str'",
    ),
    (
        "ResourceResolutionError",
        "to_dict",
        # ``extended`` is the B-ERR-5 opt-in for fields beyond the contract's envelope.
        "(self, *, max_message_length: 'int' = 300, extended: 'bool' = False) -> 'SerializedResourceError'",
    ),
    (
        "Snapshot",
        None,
        "(snapshot_id: 'str', created_at: 'float', resources: 'Mapping[ResourceKey, SnapshotValue[Any]]', errors: 'Mapping[ResourceKey, Exception]' = <factory>, diagnostics: 'SnapshotDiagnostics' = <factory>) -> None",
    ),
    ("Snapshot", "error_for", "(self, key: 'ResourceKey') -> 'Exception | None'"),
    (
        "Snapshot",
        "maybe_value",
        "(self, key: 'ResourceKey', expected_type: 'type[T] | None' = None) -> 'T | None'",
    ),
    (
        "Snapshot",
        "value",
        "(self, key: 'ResourceKey', expected_type: 'type[T] | None' = None) -> 'T'",
    ),
    (
        "SnapshotBuildError",
        None,
        "(errors: 'Mapping[ResourceKey, Exception]', *, snapshot: 'Any | None' = None) -> 'None'",
    ),
    (
        "SnapshotBuildError",
        "to_dict",
        # ``extended`` is the B-ERR-5 opt-in for fields beyond the contract's envelope;
        # ``max_errors`` (issue 16) the opt-in cap on the serialized per-key errors.
        "(self, *, max_message_length: 'int' = 300, extended: 'bool' = False, max_errors: 'int | None' = None) -> 'SerializedSnapshotBuildError'",
    ),
    (
        "SnapshotConsistencyError",
        None,
        "(*, keys: 'tuple[ResourceKey, ...]', oldest_key: 'ResourceKey', oldest_observed_at: 'float', newest_key: 'ResourceKey', newest_observed_at: 'float', observation_skew_seconds: 'float', max_observation_skew_seconds: 'float', snapshot: 'Any | None' = None) -> 'None'",
    ),
    (
        "SnapshotConsistencyPolicy",
        None,
        "(max_observation_skew_seconds: 'float', include_optional_resources: 'bool' = False) -> None",
    ),
    (
        "SnapshotDiagnostics",
        None,
        "(duration_ms: 'float' = 0.0, requested_resources: 'int' = 0, resolved_resources: 'int' = 0, failed_resources: 'int' = 0, cache_hits: 'int' = 0, cache_misses: 'int' = 0, cache_batch_reads: 'int' = 0, cache_batch_writes: 'int' = 0, stale_values: 'int' = 0, coalesced_requests: 'int' = 0, source_calls: 'int' = 0, batch_calls: 'int' = 0, derived_calls: 'int' = 0, refresh_scheduled: 'int' = 0, refresh_completed: 'int' = 0, refresh_failed: 'int' = 0, support_cache_hits: 'int' = 0, support_cache_misses: 'int' = 0, retries: 'int' = 0, batch_chunks: 'int' = 0, future_timestamp_rejections: 'int' = 0, observation_skew_ms: 'float' = 0.0, source_calls_by_source: 'Mapping[str, int]' = <factory>, source_latency_ms_by_source: 'Mapping[str, float]' = <factory>) -> None",
    ),
    (
        "SnapshotRequest",
        None,
        "(*, required: 'Iterable[ResourceKey]' = (), optional: 'Iterable[ResourceKey]' = (), consistency_policy: 'SnapshotConsistencyPolicy | None' = None, "
        "acceptance_policy: 'SnapshotAcceptancePolicy | None' = None) -> 'None'",  # 0.6 addition
    ),
    ("SnapshotRequest", "is_required", "(self, key: 'ResourceKey') -> 'bool'"),
    (
        "SnapshotSource",
        "fetch",
        "(self, key: 'ResourceKey', context: 'FetchContext') -> 'SourcePayload[Any]'",
    ),
    (
        "SnapshotValue",
        None,
        "(key: 'ResourceKey', value: 'T', source: 'str', observed_at: 'float', fetched_at: 'float', age_seconds: 'float', stale: 'bool', from_cache: 'bool', latency_ms: 'float', attempts: 'int' = 1, metadata: 'Mapping[str, Any]' = <factory>, authority_rank: 'int' = 0, version: 'str' = <factory>, dependency_versions: 'Mapping[ResourceKey, str]' = <factory>) -> None",
    ),
    (
        "SourceAuthorityPolicy",
        None,
        "(source_ranks: 'Mapping[str, int]' = <factory>, default_rank: 'int' = 0) -> None",
    ),
    ("SourceAuthorityPolicy", "rank_for", "(self, source: 'str') -> 'int'"),
    (
        "SourceFailure",
        None,
        "(source: 'str', error_type: 'str', message: 'str', attempts: 'int' = 1) -> None",
    ),
    ("SourceFailure", "format", "(self, *, max_message_length: 'int' = 300) -> 'str'"),
    (
        "SourceFailure",
        "to_dict",
        "(self, *, max_message_length: 'int' = 300) -> 'SerializedSourceFailure'",
    ),
    (
        "SourcePayload",
        None,
        "(value: 'T', observed_at: 'float | None' = None, metadata: 'Mapping[str, Any]' = <factory>) -> None",
    ),
    ("SubmissionBacklogFullError", None, "(*, limit: 'int', pending: 'int') -> 'None'"),
    ("deepcopy_payload", None, "(value: 'T') -> 'T'"),
]

FIELDS: dict[str, list[str]] = {
    "BuilderHealth": [
        "closed",
        "background_refreshes",
        "singleflight_in_flight",
        "source_support_cache_entries",
        "capacity",
        "cache",
        "circuits",
        "active_dispatch_workers",
        "waiting_for_capacity",
        "queue_timeout_count",
        "source_timeout_count",
        "deadline_exceeded_count",
        "revalidation_attempt_count",
        "revalidation_failure_count",
        "pending_submissions",
        "max_pending_submissions",
        # 0.6 additions (public-api-0.6.md section 2, B3)
        "source_timeout_guarantees",
        "blocking_source_count",
        "protected_blocking_source_count",
        "unsafe_blocking_source_count",
        "undeclared_source_timeout_count",
        "source_transport_timeout_violation_count",
        "source_transport_timeout_violations",
        "payload_copy_components",
        "active_payload_copies",
        "waiting_for_copy_capacity",
        "payload_copy_started_count",
        "payload_copy_completed_count",
        "payload_copy_failure_count",
        "payload_copy_timeout_count",
        "payload_copy_capacity_timeout_count",
        "payload_copy_shutdown_incomplete",
        "payload_copy_shutdown_timeout_count",
        "payload_copy_active_at_last_shutdown_timeout",
        "observability_buffers",
        "observability_pending",
        "observability_peak_pending",
        "observability_dropped_count",
        "observability_failure_count",
        "observability_shutdown_incomplete",
        "observability_shutdown_timeout_count",
    ],
    "CacheLookup": ["value", "fresh", "usable_stale", "age_seconds"],
    "CacheWriteResult": ["status", "value", "previous"],
    "FetchContext": [
        "requested_at",
        "deadline_at",
        "deadline_monotonic",
        "metadata",
        "snapshot_id",
    ],
    "FreshnessPolicy": [
        "ttl_seconds",
        "max_stale_seconds",
        "allow_stale_on_error",
        "refresh_mode",
        "refresh_ahead_seconds",
    ],
    "KeyNormalizer": ["namespace", "name", "subject", "qualifier_name", "qualifier_value"],
    "ObservationPolicy": ["future_tolerance_seconds", "reject_future_observations"],
    "ResourceKey": ["namespace", "name", "subject", "qualifiers", "_normalizer"],
    "Snapshot": ["snapshot_id", "created_at", "resources", "errors", "diagnostics"],
    "SnapshotConsistencyPolicy": ["max_observation_skew_seconds", "include_optional_resources"],
    "SnapshotDiagnostics": [
        "duration_ms",
        "requested_resources",
        "resolved_resources",
        "failed_resources",
        "cache_hits",
        "cache_misses",
        "cache_batch_reads",
        "cache_batch_writes",
        "stale_values",
        "coalesced_requests",
        "source_calls",
        "batch_calls",
        "derived_calls",
        "refresh_scheduled",
        "refresh_completed",
        "refresh_failed",
        "support_cache_hits",
        "support_cache_misses",
        "retries",
        "batch_chunks",
        "future_timestamp_rejections",
        "observation_skew_ms",
        "source_calls_by_source",
        "source_latency_ms_by_source",
    ],
    "SnapshotRequest": ["required", "optional", "consistency_policy", "acceptance_policy"],
    "SnapshotValue": [
        "key",
        "value",
        "source",
        "observed_at",
        "fetched_at",
        "age_seconds",
        "stale",
        "from_cache",
        "latency_ms",
        "attempts",
        "metadata",
        "authority_rank",
        "version",
        "dependency_versions",
    ],
    "SourceAuthorityPolicy": ["source_ranks", "default_rank"],
    "SourceFailure": ["source", "error_type", "message", "attempts"],
    "SourcePayload": ["value", "observed_at", "metadata"],
}

PROPERTIES = [
    ("AuthorityPolicyResolver", "has_rules"),
    ("CacheWriteResult", "stored"),
    ("Snapshot", "complete"),
    ("Snapshot", "stale_keys"),
    ("SnapshotRequest", "keys"),
]


def test_core_all_is_exactly_the_contract() -> None:
    assert sorted(core.__all__) == sorted({*CORE_NAMES, *ADDITIONS["coalestra.core"]})
    for name in CORE_NAMES:
        assert hasattr(core, name), name


def _signature_of(name: str, method: str | None) -> str:
    owner = getattr(core, name)
    if method is None:
        return str(inspect.signature(owner))
    attribute = inspect.getattr_static(owner, method)
    if isinstance(attribute, (classmethod, staticmethod)):
        attribute = attribute.__func__
    return str(inspect.signature(attribute))


@pytest.mark.parametrize(
    ("name", "method", "expected"),
    SIGNATURES,
    ids=[f"{name}.{method or '__init__'}" for name, method, _ in SIGNATURES],
)
def test_signature(name: str, method: str | None, expected: str) -> None:
    assert _signature_of(name, method) == expected


def test_key_normalizer_signature() -> None:
    parameters = inspect.signature(core.KeyNormalizer).parameters
    assert list(parameters) == FIELDS["KeyNormalizer"]
    for parameter in parameters.values():
        assert parameter.default.__name__ == "_strip"
        assert parameter.default("  AbC ") == "AbC"


@pytest.mark.parametrize(("name", "fields"), FIELDS.items(), ids=list(FIELDS))
def test_dataclass_fields(name: str, fields: list[str]) -> None:
    cls = getattr(core, name)
    assert [item.name for item in dataclasses.fields(cls)] == fields


@pytest.mark.parametrize(("name", "attribute"), PROPERTIES)
def test_read_only_properties(name: str, attribute: str) -> None:
    assert isinstance(inspect.getattr_static(getattr(core, name), attribute), property)


@pytest.mark.parametrize(
    ("enum_name", "members"),
    [
        (
            "CacheWriteStatus",
            {
                "STORED": "stored",
                "IGNORED_LOWER_AUTHORITY": "ignored_lower_authority",
                "IGNORED_OLDER": "ignored_older",
                "IGNORED_DUPLICATE": "ignored_duplicate",
            },
        ),
        (
            "RefreshMode",
            {
                "BLOCKING": "blocking",
                "STALE_WHILE_REVALIDATE": "stale_while_revalidate",
                "REFRESH_AHEAD": "refresh_ahead",
            },
        ),
    ],
)
def test_enums_are_str_enums_with_the_contract_members(
    enum_name: str, members: dict[str, str]
) -> None:
    enum_type: Any = getattr(core, enum_name)
    assert issubclass(enum_type, str)
    assert {member.name: member.value for member in enum_type} == members


def test_constants() -> None:
    assert core.ERROR_DIAGNOSTICS_SCHEMA == "coalestra.error-diagnostics"
    assert core.ERROR_DIAGNOSTICS_SCHEMA_VERSION == 1
    transforms = {
        "PRESERVE_KEY_NORMALIZER": ["_strip"] * 5,
        "LEGACY_KEY_NORMALIZER": ["_lower", "_lower", "_upper", "_lower", "_strip"],
        "CASE_INSENSITIVE_KEY_NORMALIZER": ["_casefold"] * 5,
    }
    for constant, names in transforms.items():
        normalizer = getattr(core, constant)
        assert isinstance(normalizer, core.KeyNormalizer)
        actual = [getattr(normalizer, field).__name__ for field in FIELDS["KeyNormalizer"]]
        assert actual == names, constant


@pytest.mark.parametrize(
    "name",
    [
        "AsyncCache",
        "AtomicAsyncCache",
        "AuthorityAwareCache",
        "AuthorityPolicyProvider",
        "BatchAsyncCache",
        "BatchAtomicAsyncCache",
        "BatchSizedSource",
        "BatchSnapshotSource",
        "Clock",
        "ConcurrencyLimitedSource",
        "DerivedSource",
        "EventSink",
        "FreshnessPolicyProvider",
        "MetricsSink",
        "ResilienceConfiguredSource",
        "SnapshotSource",
        "SourceBase",
    ],
)
def test_protocols_are_runtime_checkable_protocols(name: str) -> None:
    protocol = getattr(core, name)
    assert getattr(protocol, "_is_protocol", False)
    assert getattr(protocol, "_is_runtime_protocol", False)


def test_every_public_callable_has_a_docstring() -> None:
    for name in CORE_NAMES:
        obj = getattr(core, name)
        # 3.10's inspect.isclass() is also true of aliases like Callable[[ResourceKey], ...].
        is_class = inspect.isclass(obj) and not isinstance(obj, types.GenericAlias)
        if is_class or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
