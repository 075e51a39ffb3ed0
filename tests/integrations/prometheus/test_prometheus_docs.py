"""docs/prometheus.md: its runnable blocks run and print the samples the page shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integrations.pages import blocks, run_page

pytest.importorskip(
    "prometheus_client", reason="prometheus-client is not installed (pip install coalestra[dev])"
)

PAGE = "prometheus.md"


def test_the_example_prints_the_documented_samples(tmp_path: Path) -> None:
    shown = blocks(PAGE, "text")[0].splitlines()
    printed = set(run_page(PAGE, tmp_path).splitlines())
    assert [line for line in shown if line not in printed] == []


def test_fragments_are_marked_not_run() -> None:
    assert len(blocks(PAGE, "python")) == 3
    assert len(blocks(PAGE, "python", runnable_only=True)) == 1
