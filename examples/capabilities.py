"""Capabilities: ask the installed coalestra what it supports before relying on it.

See docs/capabilities.md. Run: ``python examples/capabilities.py``.
"""

from __future__ import annotations

import json

import coalestra
from coalestra import CapabilityRequirementError, capabilities, require_capabilities


def main() -> None:
    installed = capabilities()
    assert installed.package_version == coalestra.__version__
    print(json.dumps(installed.to_dict(), indent=2))

    # Fail fast at start-up when a feature the service relies on is missing.
    require_capabilities(features=["snapshot_acceptance"], schemas={"error_diagnostics": 1})

    # Degrade gracefully when an optional feature is absent.
    if installed.supports("builder_health_assessment"):
        print("health assessment available: exporting assessed health")

    missing: CapabilityRequirementError | None = None
    try:
        require_capabilities(features=["partitioned_request_builds"], schemas={"builder_health": 2})
    except CapabilityRequirementError as error:
        missing = error
    assert missing is not None
    assert missing.missing_features == ("partitioned_request_builds",)
    assert dict(missing.schema_mismatches) == {"builder_health": (2, 1)}
    print(missing)


if __name__ == "__main__":
    main()
