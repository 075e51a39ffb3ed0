"""The public API manifest: every name of the coalestra 0.5.7 contract, and nothing missing.

The lists are copied from the API contract (the project never reads files outside itself).
``coalestra.__all__`` holds the contract's names plus every subpackage's exports.
"""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

import coalestra

CONTRACT_NAMES = frozenset(
    {
        "AsyncCache",
        "AsyncMemoryCache",
        "AtomicAsyncCache",
        "AuthorityAwareCache",
        "AuthorityPolicyProvider",
        "AuthorityPolicyResolver",
        "AuthorityResolver",
        "BatchAsyncCache",
        "BatchAtomicAsyncCache",
        "BatchSizedSource",
        "BatchSnapshotSource",
        "BufferOverflowPolicy",
        "BufferedEventSink",
        "BufferedMetricsSink",
        "BufferedSinkStats",
        "BuilderHealth",
        "CASE_INSENSITIVE_KEY_NORMALIZER",
        "CacheLookup",
        "CacheStats",
        "CacheWriteResult",
        "CacheWriteStatus",
        "CallableBatchSource",
        "CallableDerivedSource",
        "CallableSource",
        "CapacityController",
        "CapacityLimiter",
        "CapacitySnapshot",
        "CircuitBreaker",
        "CircuitBreakerPolicy",
        "CircuitIdentity",
        "CircuitOpenError",
        "CircuitScope",
        "CircuitSnapshot",
        "CircuitState",
        "CoalestraError",
        "ConcurrencyLimitedSource",
        "DependencyCycleError",
        "DependencyResolutionError",
        "DerivedSource",
        "ERROR_DIAGNOSTICS_SCHEMA",
        "ERROR_DIAGNOSTICS_SCHEMA_VERSION",
        "EventRecord",
        "FetchContext",
        "FreshnessPolicy",
        "FreshnessPolicyProvider",
        "InMemoryMetrics",
        "KeyNormalizer",
        "LEGACY_KEY_NORMALIZER",
        "LoggingEventSink",
        "MetricRecord",
        "NullEventSink",
        "NullMetrics",
        "ObservationPolicy",
        "PRESERVE_KEY_NORMALIZER",
        "PayloadCopier",
        "PayloadIsolationError",
        "PayloadIsolator",
        "PolicyResolver",
        "PublishResult",
        "PublishStatus",
        "RefreshMode",
        "ResilienceConfiguredSource",
        "ResiliencePolicyResolver",
        "ResourceKey",
        "ResourcePublisher",
        "ResourceResolutionError",
        "ResourceUpdate",
        "RetryPolicy",
        "SerializedResourceError",
        "SerializedSnapshotBuildError",
        "SerializedSourceFailure",
        "SessionClosedError",
        "Snapshot",
        "SnapshotBuildError",
        "SnapshotBuilder",
        "SnapshotConsistencyError",
        "SnapshotConsistencyPolicy",
        "SnapshotDeadlineExceededError",
        "SnapshotDiagnostics",
        "SnapshotRequest",
        "SnapshotSession",
        "SnapshotSource",
        "SnapshotValue",
        "SourceAuthorityPolicy",
        "SourceFailure",
        "SourcePayload",
        "SourceProtocolError",
        "SourceQueueTimeoutError",
        "SourceResiliencePolicy",
        "SourceTimeoutError",
        "SourceUnavailableError",
        "SubmissionBacklogFullError",
        "SyncResourcePublisher",
        "SyncSnapshotBuilder",
        "SyncSnapshotSession",
        "__version__",
        "deepcopy_payload",
    }
)

# Additions of the 0.6 line (public-api-0.6.md), on top of the 0.5.7 names above.
V06_CORE_NAMES = frozenset(
    {
        "COALESTRA_API_STABILITY",
        "COALESTRA_CAPABILITIES_SCHEMA",
        "COALESTRA_CAPABILITIES_SCHEMA_VERSION",
        "CapabilityRequirementError",
        "CoalestraCapabilities",
        "PayloadCopyHealth",
        "PayloadCopyShutdownTimeoutError",
        "PayloadCopySubsystemClosedError",
        "build_capabilities",
        "capabilities",
        "require_capabilities",
        "RequestDegradationPolicy",
        "ResourceAcceptanceError",
        "ResourceAcceptanceRule",
        "SnapshotAcceptanceError",
        "SnapshotAcceptancePolicy",
        "SnapshotAcceptanceReason",
        "SnapshotAcceptanceViolation",
        "SnapshotRequirement",
        "SnapshotResult",
        "SnapshotResultState",
        "BUILDER_HEALTH_ASSESSMENT_SCHEMA",
        "BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION",
        "BUILDER_HEALTH_SCHEMA",
        "BUILDER_HEALTH_SCHEMA_VERSION",
        "BuilderHealthAssessment",
        "BuilderHealthAssessmentPolicy",
        "BuilderHealthFinding",
        "BuilderHealthReason",
        "BuilderHealthSeverity",
        "ObservabilityShutdownTimeoutError",
        "BlockingSourceTimeoutConfigured",
        "SourceTimeoutGuarantee",
        "SourceTimeoutGuaranteeStatus",
        "inspect_source_timeout_guarantee",
    }
)
V06_ORCHESTRATION_NAMES = frozenset(
    {
        "install_operational_methods",
        "try_build_request",
        "try_build_requests",
        "try_resolve_request",
    }
)
V06_NAMES = V06_CORE_NAMES | V06_ORCHESTRATION_NAMES

SUBPACKAGE_EXPORTS: dict[str, frozenset[str]] = {
    "coalestra.adapters": frozenset(
        {
            "CallableBatchSource",
            "CallableDerivedSource",
            "CallableSource",
        }
    ),
    "coalestra.cache": frozenset(
        {
            "AsyncMemoryCache",
            "CacheStats",
            "PublishResult",
            "PublishStatus",
            "ResourcePublisher",
            "ResourceUpdate",
        }
    ),
    "coalestra.concurrency": frozenset(
        {
            "CapacityController",
            "CapacityLimiter",
            "CapacitySnapshot",
        }
    ),
    "coalestra.core": frozenset(
        {
            "AsyncCache",
            "AtomicAsyncCache",
            "AuthorityAwareCache",
            "AuthorityPolicyProvider",
            "AuthorityPolicyResolver",
            "AuthorityResolver",
            "BatchAsyncCache",
            "BatchAtomicAsyncCache",
            "BatchSizedSource",
            "BatchSnapshotSource",
            "BuilderHealth",
            "CASE_INSENSITIVE_KEY_NORMALIZER",
            "CacheLookup",
            "CacheWriteResult",
            "CacheWriteStatus",
            "CircuitOpenError",
            "Clock",
            "CoalestraError",
            "ConcurrencyLimitedSource",
            "DependencyCycleError",
            "DependencyResolutionError",
            "DerivedSource",
            "DiagnosticsCollector",
            "ERROR_DIAGNOSTICS_SCHEMA",
            "ERROR_DIAGNOSTICS_SCHEMA_VERSION",
            "EventSink",
            "FetchContext",
            "FreshnessPolicy",
            "FreshnessPolicyProvider",
            "KeyNormalizer",
            "LEGACY_KEY_NORMALIZER",
            "MetricsSink",
            "ObservationPolicy",
            "PRESERVE_KEY_NORMALIZER",
            "PayloadCopier",
            "PayloadIsolationError",
            "PayloadIsolator",
            "RefreshMode",
            "ResilienceConfiguredSource",
            "ResourceKey",
            "ResourceResolutionError",
            "SerializedResourceError",
            "SerializedSnapshotBuildError",
            "SerializedSourceFailure",
            "SessionClosedError",
            "Snapshot",
            "SnapshotBuildError",
            "SnapshotConsistencyError",
            "SnapshotConsistencyPolicy",
            "SnapshotDeadlineExceededError",
            "SnapshotDiagnostics",
            "SnapshotRequest",
            "SnapshotSource",
            "SnapshotValue",
            "Source",
            "SourceAuthorityPolicy",
            "SourceBase",
            "SourceFailure",
            "SourcePayload",
            "SourceProtocolError",
            "SourceQueueTimeoutError",
            "SourceTimeoutError",
            "SourceUnavailableError",
            "SubmissionBacklogFullError",
            "SystemClock",
            "deepcopy_payload",
        }
    )
    | V06_CORE_NAMES,
    "coalestra.observability": frozenset(
        {
            "BufferOverflowPolicy",
            "BufferedEventSink",
            "BufferedMetricsSink",
            "BufferedSinkStats",
            "EventRecord",
            "InMemoryMetrics",
            "LoggingEventSink",
            "MetricRecord",
            "NullEventSink",
            "NullMetrics",
            "ObservationSummary",
        }
    ),
    "coalestra.orchestration": frozenset(
        {
            "PolicyResolver",
            "SnapshotBuilder",
            "SnapshotSession",
        }
    )
    | V06_ORCHESTRATION_NAMES,
    "coalestra.resilience": frozenset(
        {
            "CircuitBreaker",
            "CircuitBreakerPolicy",
            "CircuitIdentity",
            "CircuitScope",
            "CircuitSnapshot",
            "CircuitState",
            "ResiliencePolicyResolver",
            "RetryPolicy",
            "SourceResiliencePolicy",
        }
    ),
    "coalestra.sync": frozenset(
        {
            "SyncResourcePublisher",
            "SyncSnapshotBuilder",
            "SyncSnapshotSession",
        }
    ),
}


# Opt-in additions after 0.5.7 (issue 16), per subpackage. The 0.5.7 lists above stay exact.
ADDITIONS: dict[str, frozenset[str]] = {
    "coalestra.core": frozenset({"ResourceNotFound", "ResourceNotFoundError"}),
    "coalestra.orchestration": frozenset(
        {"CachedFunction", "CachedReader", "SyncCachedReader", "cached"}
    ),
}


def _exports(module_name: str) -> frozenset[str]:
    return SUBPACKAGE_EXPORTS[module_name] | ADDITIONS.get(module_name, frozenset())


def test_additions_are_new_names() -> None:
    for module_name, names in ADDITIONS.items():
        assert module_name in SUBPACKAGE_EXPORTS
        assert not names & (CONTRACT_NAMES | V06_NAMES)


def test_every_contract_name_is_exported_at_the_top_level() -> None:
    missing = CONTRACT_NAMES - set(coalestra.__all__)
    assert not missing, f"missing from coalestra.__all__: {sorted(missing)}"
    for name in CONTRACT_NAMES:
        assert getattr(coalestra, name) is not None


def test_top_level_all_is_exactly_the_contract_plus_subpackage_exports() -> None:
    expected = CONTRACT_NAMES.union(V06_NAMES, *map(_exports, SUBPACKAGE_EXPORTS))
    assert set(coalestra.__all__) == expected
    assert len(coalestra.__all__) == len(set(coalestra.__all__)), "duplicates in __all__"


@pytest.mark.parametrize("module_name", sorted(SUBPACKAGE_EXPORTS))
def test_subpackage_exports_exactly_its_contract_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == _exports(module_name)
    for name in module.__all__:
        assert getattr(module, name) is getattr(coalestra, name), name


@pytest.mark.parametrize("module_name", sorted(SUBPACKAGE_EXPORTS))
def test_every_class_and_function_a_subpackage_exports_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        public = getattr(module, name)
        if typing.get_origin(public) is not None:
            continue  # a type alias such as Callable[...] (Python 3.10 calls those classes)
        if inspect.isclass(public) or inspect.isfunction(public):
            assert public.__doc__, f"{module_name}.{name} has no docstring"


def test_every_0_6_addition_is_exported_at_the_top_level() -> None:
    assert not V06_NAMES & CONTRACT_NAMES
    for name in V06_NAMES:
        assert name in coalestra.__all__
        assert getattr(coalestra, name) is not None


def test_version_matches_the_contract() -> None:
    assert coalestra.__version__ == "0.5.7"
