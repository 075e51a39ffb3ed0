"""Run every ``benchmarks/bench_*.py`` script in turn (``make bench``).

Each script is standalone: it prints its figures as ``name: value unit (target ...)`` lines and
exits non-zero only if it could not run. Speed is measured here, never in the test suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.stem}", flush=True)
        failed |= subprocess.call([sys.executable, str(script)])
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
