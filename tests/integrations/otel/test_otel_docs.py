"""docs/opentelemetry.md: its runnable block runs and prints the span tree the page shows.

The page follows the docs convention: fenced ``python`` blocks run in order in one namespace,
except a block right after a ``<!-- not-run: reason -->`` line; the first ``text`` block is the
output the page shows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed (pip install coalestra[dev])"
)

PAGE = Path(__file__).resolve().parents[3] / "docs" / "opentelemetry.md"
_BLOCK = re.compile(r"^(?:(<!-- not-run:[^\n]+-->)\n\n)?```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(language: str, *, runnable_only: bool = False) -> list[str]:
    return [
        code
        for not_run, tag, code in _BLOCK.findall(PAGE.read_text("utf-8"))
        if tag == language and not (runnable_only and not_run)
    ]


def test_the_example_prints_the_documented_span_tree(tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks("python", runnable_only=True)), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == blocks("text")[0]
