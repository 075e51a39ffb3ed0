"""One cache miss, file by file: the orchestration modules a cold single-key build runs code in,
traced through the public API. ``docs/how-a-build-works.md`` ("One miss, file by file") walks
exactly these modules; a change that adds one to the path must say so there too."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from coalestra import CallableSource, FetchContext, ResourceKey, SnapshotBuilder

KEY = ResourceKey("market", "price", "AAPL")
ORCHESTRATION = f"coalestra{os.sep}orchestration{os.sep}"
DOC = Path(__file__).resolve().parents[2] / "docs" / "how-a-build-works.md"

# The modules of one miss, in the order the doc walks them.
MISS_PATH = (
    "_builder.py",
    "_assembly.py",
    "_cache_access.py",
    "_flights.py",
    "_engine.py",
    "_sources.py",
    "_gate.py",
    "_payloads.py",
)


async def fetch(key: ResourceKey, context: FetchContext) -> dict[str, Any]:
    return {"bid": 1.0, "venue": key.subject}


async def traced_cold_build() -> set[str]:
    """The orchestration modules whose functions one cold build of ``KEY`` calls."""
    seen: set[str] = set()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            filename = frame.f_code.co_filename
            if ORCHESTRATION in filename:
                seen.add(os.path.basename(filename))

    source = CallableSource(name="rest", priority=10, supports=lambda key: True, fetcher=fetch)
    async with SnapshotBuilder([source]) as builder:
        sys.setprofile(profile)
        try:
            snapshot = await builder.build([KEY])
        finally:
            sys.setprofile(None)
    assert snapshot[KEY].value == {"bid": 1.0, "venue": "AAPL"}
    assert snapshot.diagnostics.cache_misses == 1
    return seen


async def test_one_cold_build_runs_in_the_modules_the_doc_walks() -> None:
    seen = await traced_cold_build()
    assert seen == set(MISS_PATH), sorted(seen)
    assert len(seen) <= len(MISS_PATH)


async def test_the_doc_walks_one_miss_through_exactly_those_modules() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## One miss, file by file", 1)[1].split("\n## ", 1)[0]
    walked = [line.split("`", 2)[1] for line in section.splitlines() if line[:1].isdigit()]
    assert tuple(walked) == MISS_PATH
