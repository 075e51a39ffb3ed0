"""The otel and prometheus extras stay optional: only each one's own subpackage imports its
third-party package, and importing coalestra never does."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coalestra

PACKAGE = Path(coalestra.__file__).resolve().parent

# (subpackage of coalestra.integrations, the module it wraps, the distribution providing it)
EXTRAS = [
    pytest.param("otel", "opentelemetry", "opentelemetry-api", id="otel"),
    pytest.param("prometheus", "prometheus_client", "prometheus-client", id="prometheus"),
]


@pytest.mark.parametrize(("subpackage", "module", "distribution"), EXTRAS)
def test_nothing_outside_the_integration_imports_the_extra(
    subpackage: str, module: str, distribution: str
) -> None:
    own = PACKAGE / "integrations" / subpackage
    imports = re.compile(rf"^\s*(?:import|from)\s+{module}\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if own not in path.parents and imports.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders


@pytest.mark.parametrize(("subpackage", "module", "distribution"), EXTRAS)
def test_importing_coalestra_does_not_import_the_extra(
    subpackage: str, module: str, distribution: str
) -> None:
    code = (
        "import sys, coalestra, coalestra.integrations, coalestra.sync; "
        f"print(any(m.split('.')[0] == {module!r} for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(("subpackage", "module", "distribution"), EXTRAS)
def test_public_names_are_documented(subpackage: str, module: str, distribution: str) -> None:
    integration = pytest.importorskip(
        f"coalestra.integrations.{subpackage}",
        reason=f"{distribution} is not installed (pip install coalestra[dev])",
    )
    assert integration.__all__ == sorted(integration.__all__)
    for name in integration.__all__:
        public = getattr(integration, name)
        if inspect.isclass(public) or inspect.isfunction(public):
            assert public.__doc__, name
