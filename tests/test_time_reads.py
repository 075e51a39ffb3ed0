"""Only the clock module (and the testing helpers) may read real or loop time.

Everything else asks the injected Clock, so the suite can run on virtual time. The check reads
code only: comments and string literals (docstrings mentioning ``time.time()``) are ignored.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

import coalestra

PACKAGE = Path(coalestra.__file__).resolve().parent
# _compat/_timeout.py: asyncio.timeout's stand-in for 3.10 reads loop time, as asyncio.timeout does.
ALLOWED = {
    PACKAGE / "core" / "_clock.py",
    PACKAGE / "testing.py",
    PACKAGE / "_compat" / "_timeout.py",
}

FORBIDDEN = re.compile(
    r"""
      \btime\s*\.\s*(?:time|monotonic|perf_counter)(?:_ns)?\s*\(       # time.time( ...
    | \bloop\s*\.\s*time\s*\(                                          # loop.time(
    | \bget_(?:running|event)_loop\s*\(\s*\)\s*\.\s*time\s*\(          # get_running_loop().time(
    | \bdatetime\s*\.\s*(?:now|utcnow|today)\s*\(                      # datetime.now(
    | \bfrom\s+time\s+import\s+[^\n]*\b(?:time|monotonic|perf_counter)(?:_ns)?\b
    """,
    re.VERBOSE,
)


def code_only(source: str) -> list[tuple[int, str]]:
    """Return ``(line number, code)`` for every line, with comments and strings blanked out."""
    lines = source.splitlines()
    blank: dict[int, list[tuple[int, int]]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.STRING):
            continue
        (start_row, start_col), (end_row, end_col) = token.start, token.end
        for row in range(start_row, end_row + 1):
            first = start_col if row == start_row else 0
            last = end_col if row == end_row else len(lines[row - 1])
            blank.setdefault(row, []).append((first, last))
    result = []
    for number, line in enumerate(lines, start=1):
        chars = list(line)
        for first, last in blank.get(number, ()):
            chars[first:last] = " " * (last - first)
        result.append((number, "".join(chars)))
    return result


def time_reads(source: str) -> list[tuple[int, str]]:
    """Return ``(line number, line)`` for every direct time read in ``source``."""
    lines = source.splitlines()
    return [
        (number, lines[number - 1].strip())
        for number, code in code_only(source)
        if FORBIDDEN.search(code)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "now = time.time()",
        "start = time.monotonic()",
        "t0 = time.perf_counter()",
        "t0 = time.perf_counter_ns()",
        "deadline = loop.time() + 5",
        "deadline = asyncio.get_running_loop().time()",
        "stamp = datetime.now(UTC)",
        "stamp = datetime.datetime.utcnow()",
        "from time import monotonic",
        "x = f(time.time())  # a comment",
    ],
)
def test_the_checker_finds_time_reads(line: str) -> None:
    assert time_reads(f"import time\n\n\ndef f():\n    {line}\n") == [(5, line)]


@pytest.mark.parametrize(
    "line",
    [
        "clock.now()",
        "self._clock.monotonic()",
        "# time.time() is not allowed here",
        "'''Docstring naming time.monotonic() and loop.time().'''",
        "message = 'avoid datetime.now()'",
        "from time import sleep",
        "runtime.time_budget()",
    ],
)
def test_the_checker_ignores_clock_calls_comments_and_strings(line: str) -> None:
    assert time_reads(f"def f():\n    {line}\n") == []


def test_only_the_clock_module_reads_time() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in ALLOWED:
            continue
        for number, line in time_reads(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line}")
    assert not offenders, "read time through the injected Clock:\n" + "\n".join(offenders)


def test_the_allowed_files_exist() -> None:
    # If the clock module moves, this test must be updated rather than silently pass.
    for path in ALLOWED:
        assert path.is_file(), path
    assert time_reads((PACKAGE / "core" / "_clock.py").read_text(encoding="utf-8"))
