"""Section 3 of the 0.6 API: the capability contract, reporting only what we ship."""

from __future__ import annotations

import inspect
import json
import pickle
import re
from inspect import signature
from pathlib import Path
from typing import Any

import pytest

import coalestra
from coalestra import (
    COALESTRA_API_STABILITY,
    COALESTRA_CAPABILITIES_SCHEMA,
    COALESTRA_CAPABILITIES_SCHEMA_VERSION,
    CapabilityRequirementError,
    CoalestraCapabilities,
    capabilities,
    require_capabilities,
)
from coalestra.core import build_capabilities
from coalestra.core._capabilities import PYTHON_REQUIRES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [
    "automatic_observability_buffering",
    "blocking_source_timeout_guarantees",
    "builder_health_assessment",
    "builder_health_serialization",
    "controlled_payload_copy_shutdown",
    "cross_build_batching",  # ours (issue 14), not a 0.6 name
    "degraded_snapshot_results",
    "payload_copy_health",
    "payload_copy_offload",
    "snapshot_acceptance",
    "snapshot_consistency",
    "snapshot_requests",
    "source_authority",
    "sync_submission_backlog",
    "transactional_revalidation",
    "versioned_error_diagnostics",
]
# 0.6 features we do not ship yet: reporting them would be a lie callers act on.
NOT_SHIPPED = [
    "partitioned_request_builds",
]


def test_constants() -> None:
    assert COALESTRA_API_STABILITY == "0.6"
    assert COALESTRA_CAPABILITIES_SCHEMA == "coalestra.capabilities"
    assert COALESTRA_CAPABILITIES_SCHEMA_VERSION == 1


def test_capabilities_report_our_version_and_equal_objects() -> None:
    installed = capabilities()
    assert installed.package_version == coalestra.__version__
    assert capabilities() == installed
    assert installed.stability == "beta"


def test_python_requires_is_our_pyproject_value() -> None:
    # A line match, not tomllib: the suite runs on Python 3.10 too.
    declared = re.search(
        r'^requires-python = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert declared is not None
    assert declared.group(1) == PYTHON_REQUIRES
    assert capabilities().python_requires == PYTHON_REQUIRES


def test_features_are_exactly_what_we_ship() -> None:
    installed = capabilities()
    assert list(installed.features) == SHIPPED
    for feature in SHIPPED:
        assert installed.supports(feature)
    for feature in NOT_SHIPPED:
        assert not installed.supports(feature)


def test_shipped_features_are_really_there() -> None:
    assert "batch_window_seconds" in signature(coalestra.SnapshotBuilder).parameters
    assert callable(coalestra.try_build_request)  # degraded_snapshot_results
    assert coalestra.SnapshotAcceptancePolicy  # snapshot_acceptance
    assert coalestra.SnapshotConsistencyPolicy  # snapshot_consistency
    assert coalestra.SourceAuthorityPolicy  # source_authority
    assert coalestra.SubmissionBacklogFullError  # sync_submission_backlog
    assert coalestra.ERROR_DIAGNOSTICS_SCHEMA_VERSION == 1  # versioned_error_diagnostics
    assert callable(coalestra.BuilderHealth.assess)  # builder_health_assessment
    assert callable(coalestra.BuilderHealth.to_dict)  # builder_health_serialization
    # automatic_observability_buffering (opt-in: the default stays direct calls)
    assert "buffer_observability" in inspect.signature(coalestra.SnapshotBuilder).parameters
    assert callable(coalestra.inspect_source_timeout_guarantee)  # blocking_source_timeout_...


def test_schemas_and_defaults_tell_the_truth() -> None:
    installed = capabilities()
    assert dict(installed.schemas) == {
        "builder_health": 1,
        "builder_health_assessment": 1,
        "capabilities": 1,
        "error_diagnostics": 1,
    }
    # 0.5.7 behaviour is kept (public-api-0.6.md, BREAKING B1/B2): sinks are called directly,
    # sources need no timeout declaration (None: not required); a source declared blocking must
    # be protected (0.6's default: no 0.5.7 source declares itself blocking).
    assert dict(installed.defaults) == {
        "allow_unsafe_blocking_sources": False,
        "batch_window_seconds": None,  # builds share batch calls only when asked to
        "buffer_observability": False,
        "require_source_timeout_declarations": None,
    }
    with pytest.raises(TypeError):
        installed.defaults["x"] = 1  # type: ignore[index]


def test_to_dict_wire_format() -> None:
    data = capabilities().to_dict()
    assert list(data) == [
        "schema",
        "schema_version",
        "package_version",
        "api_stability",
        "python_requires",
        "stability",
        "features",
        "schemas",
        "defaults",
    ]
    assert data["schema"] == "coalestra.capabilities"
    assert data["schema_version"] == 1
    assert data["package_version"] == coalestra.__version__
    assert data["features"] == SHIPPED
    assert json.loads(json.dumps(data)) == data


def test_api_stability_is_the_0_6_line_now_that_its_api_is_complete() -> None:
    # public-api-0.6.md section 3 (wire format) and B5: "0.6" once the 0.6 features exist.
    assert capabilities().api_stability == "0.6" == coalestra.COALESTRA_API_STABILITY
    assert capabilities().to_dict()["api_stability"] == "0.6"
    assert CoalestraCapabilities(package_version="1").api_stability == "0.6"


def test_require_returns_the_capabilities() -> None:
    assert require_capabilities() == capabilities()
    got = require_capabilities(
        features=["snapshot_acceptance", "snapshot_requests"], schemas={"error_diagnostics": 1}
    )
    assert got == capabilities()
    assert capabilities().require(features=iter(["snapshot_consistency"])) == capabilities()


def test_require_reports_missing_features_and_schema_mismatches() -> None:
    with pytest.raises(CapabilityRequirementError) as caught:
        require_capabilities(
            features=["partitioned_request_builds", "snapshot_acceptance", "no_such_feature"],
            schemas={"error_diagnostics": 2, "payload_copies": 1, "capabilities": 1},
        )
    error = caught.value
    assert isinstance(error, coalestra.CoalestraError)
    assert error.missing_features == ("no_such_feature", "partitioned_request_builds")
    assert dict(error.schema_mismatches) == {
        "error_diagnostics": (2, 1),
        "payload_copies": (1, None),
    }
    message = str(error)
    assert "no_such_feature" in message
    assert "partitioned_request_builds" in message
    assert "error_diagnostics" in message
    assert "payload_copies " in message
    assert str(pickle.loads(pickle.dumps(error))) == message


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"features": "snapshot_acceptance"}, TypeError),
        ({"features": 3}, TypeError),
        ({"schemas": {"capabilities": True}}, TypeError),
        ({"schemas": {"capabilities": 1.0}}, TypeError),
        ({"schemas": {"capabilities": 0}}, ValueError),
        ({"schemas": [("capabilities", 1)]}, TypeError),
    ],
)
def test_require_rejects_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        require_capabilities(**kwargs)
    with pytest.raises(error):
        capabilities().require(**kwargs)


def test_require_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        require_capabilities(["snapshot_acceptance"])  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"features": ("b", "a")}, ValueError),
        ({"features": ("a", "a")}, ValueError),
        ({"features": ("", "a")}, ValueError),
        ({"features": " "}, TypeError),
        ({"schemas": {"x": 0}}, ValueError),
        ({"schemas": {"x": "1"}}, TypeError),
        ({"schemas": {"x": False}}, TypeError),
    ],
)
def test_capabilities_validate(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        CoalestraCapabilities(package_version="1", **kwargs)


def test_build_capabilities_strips_and_rejects_blank() -> None:
    assert build_capabilities("  9.9 ").package_version == "9.9"
    with pytest.raises(ValueError, match="blank"):
        build_capabilities("   ")
    with pytest.raises(TypeError):
        build_capabilities(None)  # type: ignore[arg-type]
