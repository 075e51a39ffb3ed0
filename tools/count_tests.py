"""Fail unless a JUnit XML report (pytest --junitxml) shows at least ``--minimum`` passed tests.

Skipped, xfailed and failed tests do not count: the gate is about tests that ran and passed.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path


def passed(report: Path) -> int:
    """The number of test cases that passed in ``report``."""
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcomes = ("failure", "error", "skipped")
    return sum(1 for case in cases if not any(case.find(o) is not None for o in outcomes))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--minimum", type=int, required=True)
    args = parser.parse_args(argv)
    count = passed(args.report)
    if count < args.minimum:
        print(
            f"TEST COUNT: only {count} tests passed; the minimum is {args.minimum}", file=sys.stderr
        )
        return 1
    print(f"{count} tests passed (minimum {args.minimum})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
