"""docs/opentelemetry.md: its runnable block runs and prints the span tree the page shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integrations.pages import blocks, run_page

pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed (pip install coalestra[dev])"
)

PAGE = "opentelemetry.md"


def test_the_example_prints_the_documented_span_tree(tmp_path: Path) -> None:
    assert run_page(PAGE, tmp_path) == blocks(PAGE, "text")[0]
