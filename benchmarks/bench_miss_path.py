"""The orchestration modules one cold single-key build runs code in (issue 14: <= 8).

Run directly (``python benchmarks/bench_miss_path.py``) or by ``make bench``. It traces one build
through the public API with ``sys.setprofile`` and prints the modules, as
``tests/orchestration/test_miss_path_modules.py`` checks them against
``docs/how-a-build-works.md``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType

from coalestra import CallableSource, FetchContext, ResourceKey, SnapshotBuilder

KEY = ResourceKey("market", "price", "AAPL")
ORCHESTRATION = f"coalestra{os.sep}orchestration{os.sep}"


async def fetch(key: ResourceKey, context: FetchContext) -> dict[str, object]:
    return {"bid": 1.0, "venue": key.subject}


async def traced() -> list[str]:
    seen: set[str] = set()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and ORCHESTRATION in frame.f_code.co_filename:
            seen.add(os.path.basename(frame.f_code.co_filename))

    source = CallableSource(name="rest", priority=10, supports=lambda key: True, fetcher=fetch)
    async with SnapshotBuilder([source]) as builder:
        sys.setprofile(profile)
        try:
            await builder.build([KEY])
        finally:
            sys.setprofile(None)
    return sorted(seen)


def main() -> None:
    modules = asyncio.run(traced())
    print(f"engine.miss_path one cold key: {len(modules)} orchestration modules target<=8")
    print("  " + ", ".join(modules))


if __name__ == "__main__":
    main()
