"""Reading and running a docs page's fenced blocks, for the integration pages' tests (imported
as ``tests.integrations.pages``).

The pages follow the docs convention: fenced ``python`` blocks run in order in one namespace,
except a block right after a ``<!-- not-run: reason -->`` line; the ``text`` blocks show output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"^(?:(<!-- not-run:[^\n]+-->)\n\n)?```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(page: str, language: str, *, runnable_only: bool = False) -> list[str]:
    """The ``language`` blocks of ``docs/<page>``, in order."""
    return [
        code
        for not_run, tag, code in _BLOCK.findall((DOCS / page).read_text("utf-8"))
        if tag == language and not (runnable_only and not_run)
    ]


def run_page(page: str, tmp_path: Path) -> str:
    """Run the page's runnable ``python`` blocks as one script; return what it printed."""
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks(page, "python", runnable_only=True)), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout
