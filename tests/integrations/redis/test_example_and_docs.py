"""The example runs as documented, and the page documents what the code does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integrations.redis.conftest import require_redis_server

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "many_workers.py"
PAGE = ROOT / "docs" / "running-many-workers.md"


def test_the_example_makes_one_upstream_call_per_key(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "upstream calls in total: 20 for 20 keys" in done.stdout
    # Each worker's output comes through a pipe of its own: whole lines, however unbuffered.
    assert len(re.findall(r"^worker-\d: 5 builds", done.stdout, re.MULTILINE)) == 2
    assert "Traceback" not in done.stderr


def test_the_example_starts_its_own_redis() -> None:
    # The example looks for redis-server on PATH: put the one the tests use there.
    binary = Path(require_redis_server())
    path = os.pathsep.join((str(binary.parent), os.environ.get("PATH", "")))
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PATH": path},
    )
    assert "upstream calls in total: 20 for 20 keys" in done.stdout


def test_the_page_has_its_diagram_and_documents_every_setting() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "```mermaid\nsequenceDiagram" in text
    for setting in (
        "prefix",
        "serializer",
        "policy_resolver",
        "lease_ttl_seconds",
        "poll_interval_seconds",
        "reconnect_interval_seconds",
        "heartbeat_seconds",
        "connect_timeout_seconds",
        "socket_timeout_seconds",
        "future_tolerance_seconds",
        "max_connections",
    ):
        assert f"`{setting}`" in text, setting
    for block in re.findall(r"(.*)\n```python\n", text):
        assert block.startswith("<!-- not-run:"), "python blocks here need a Redis server"
