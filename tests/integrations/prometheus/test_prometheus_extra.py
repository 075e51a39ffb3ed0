"""The prometheus extra stays optional: only its own subpackage imports prometheus_client."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coalestra

PACKAGE = Path(coalestra.__file__).resolve().parent
OWN = PACKAGE / "integrations" / "prometheus"
IMPORTS = re.compile(r"^\s*(?:import|from)\s+prometheus_client\b", re.MULTILINE)


def test_nothing_outside_the_integration_imports_prometheus_client() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if OWN not in path.parents and IMPORTS.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders


def test_importing_coalestra_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, coalestra, coalestra.integrations, coalestra.sync; "
        "print(any(m.split('.')[0] == 'prometheus_client' for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_public_names_are_documented() -> None:
    module = pytest.importorskip(
        "coalestra.integrations.prometheus",
        reason="prometheus-client is not installed (pip install coalestra[dev])",
    )
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        public = getattr(module, name)
        if inspect.isclass(public) or inspect.isfunction(public):
            assert public.__doc__, name
