"""The documentation stays true: every example runs, and every Python block of the docs executes.

Convention for code blocks in ``README.md`` and ``docs/*.md``:

* Each page's fenced ``python`` blocks run in order, in one namespace, in a fresh interpreter
  (like a doctest session): a block may use the names earlier blocks of the same page defined.
* A block is skipped only when the line right before it (blank lines aside) is an explicit
  ``<!-- not-run: reason -->`` comment; the reason is mandatory. Use it for fragments that need
  the reader's own services.
* Blocks use ``asyncio.run(...)`` or ``coalestra.testing.VirtualTimeRunner()``, never a
  top-level ``await``; a block that shows an output asserts it.
* A fenced ``json`` block preceded by ``<!-- output-of: EXPRESSION -->`` shows an output: at that
  point of the session, ``EXPRESSION`` must equal the block's parsed JSON.
* Tracebacks point at the Markdown file and line of the failing block.

The integration pages (Redis, Prometheus, OpenTelemetry) are tested by their owners.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
TIMEOUT_SECONDS = 60
MAX_LINE_LENGTH = 100  # as ruff's line-length for the code

# Pages and examples owned (and tested) elsewhere.
OTHER_OWNERS_PAGES = frozenset({"running-many-workers.md", "prometheus.md", "opentelemetry.md"})
OTHER_OWNERS_EXAMPLES = frozenset({"demo.py", "many_workers.py"})

# Every documentation page has a runnable example of its own.
EXAMPLE_FOR_PAGE = {
    "concepts.md": "concepts.py",
    "building.md": "building.py",
    "caching-and-publishing.md": "caching_and_publishing.py",
    "resilience.md": "resilience.py",
    "concurrency-and-deadlines.md": "concurrency_and_deadlines.py",
    "sessions.md": "sessions.py",
    "sync-api.md": "sync_api.py",
    "observability.md": "observability.py",
    "errors.md": "errors.py",
    "testing.md": "testing_on_virtual_time.py",
    "how-a-build-works.md": "how_a_build_works.py",
    "defaults.md": "defaults.py",
    "everyday.md": "one_key_reads.py",
    "acceptance-policies.md": "acceptance_policies.py",
    "capabilities.md": "capabilities.py",
    "health.md": "health.py",
    "source-timeouts.md": "source_timeouts.py",
}

# Signs of a bug that a zero exit code would hide.
TELLTALES = ("Task exception was never retrieved", "was never awaited", "Task was destroyed")

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:(.*)-->\s*$")
_OUTPUT_OF = re.compile(r"^<!--\s*output-of:(.*)-->\s*$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    """A fenced ``python`` block (``output_of`` empty) or a ``json`` output block: where its
    text starts, the text, and whether it is checked."""

    line: int  # 1-based line of the block's first text line
    code: str
    runs: bool
    output_of: str = ""  # for json blocks: the expression whose value the block shows


def python_blocks(path: Path) -> list[Block]:
    """Every fenced ``python`` block and marked ``json`` output block of ``path``, in order.

    Raises:
        ValueError: an unclosed fence, or a marker without its reason or expression.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    previous = ""  # the last non-blank line outside a block
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{index + 1}: unclosed code fence")
        code = "\n".join(lines[start:end]) + "\n"
        if fence.group(1) == "python":
            marker = _NOT_RUN.match(previous)
            if marker is not None and not marker.group(1).strip():
                raise ValueError(f"{path.name}:{index + 1}: not-run needs a reason")
            blocks.append(Block(start + 1, code, runs=marker is None))
        elif fence.group(1) == "json" and (output := _OUTPUT_OF.match(previous)) is not None:
            expression = output.group(1).strip()
            if not expression:
                raise ValueError(f"{path.name}:{index + 1}: output-of needs an expression")
            blocks.append(Block(start + 1, code, runs=True, output_of=expression))
        previous = ""
        index = end + 1
    return blocks


def documented_pages() -> list[Path]:
    """README.md and every docs page this test owns."""
    pages = [ROOT / "README.md"]
    pages += sorted(p for p in DOCS.glob("*.md") if p.name not in OTHER_OWNERS_PAGES)
    return pages


def examples() -> list[Path]:
    """Every example script this test owns."""
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name not in OTHER_OWNERS_EXAMPLES)


_RUNNER = """\
import json
import sys

namespace = {"__name__": "__main__"}
for line, code, output_of in BLOCKS:
    try:
        if output_of:
            actual, shown = eval(output_of, namespace), json.loads(code)
            assert actual == shown, f"{output_of} is {actual!r}; the page shows {shown!r}"
        else:
            exec(compile("\\n" * (line - 1) + code, PATH, "exec"), namespace)
    except BaseException:
        print(f"the block at {PATH}:{line} failed", file=sys.stderr)
        raise
"""


def session_script(path: Path, blocks: list[Block]) -> str:
    """A script running ``blocks`` in order in one namespace, each compiled so that tracebacks
    name ``path`` and the block's own line numbers."""
    runnable = [(block.line, block.code, block.output_of) for block in blocks if block.runs]
    return f"PATH = {str(path)!r}\nBLOCKS = {runnable!r}\n{_RUNNER}"


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str], what: str) -> None:
    failed = result.returncode != 0 or any(t in result.stderr for t in TELLTALES)
    if failed:
        pytest.fail(
            f"{what} failed (exit code {result.returncode})\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}",
            pytrace=False,
        )


@pytest.mark.parametrize("example", examples(), ids=lambda path: path.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    assert_clean(run_python([str(example)], tmp_path), f"examples/{example.name}")


@pytest.mark.parametrize("page", documented_pages(), ids=lambda path: path.name)
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    if not any(block.runs for block in blocks):
        pytest.skip(f"{page.name} has no runnable python block")
    script = tmp_path / "session.py"
    script.write_text(session_script(page, blocks), encoding="utf-8")
    assert_clean(run_python([str(script)], tmp_path), page.name)


def test_not_run_blocks_are_rare() -> None:
    skipped = [
        f"{page.name}:{block.line}"
        for page in documented_pages()
        for block in python_blocks(page)
        if not block.runs
    ]
    assert len(skipped) <= 5, f"too many not-run blocks: {skipped}"


def test_every_page_has_an_example() -> None:
    pages = {page.name for page in DOCS.glob("*.md")} - OTHER_OWNERS_PAGES - {"index.md"}
    assert pages == set(EXAMPLE_FOR_PAGE)
    missing = [name for name in EXAMPLE_FOR_PAGE.values() if not (EXAMPLES / name).is_file()]
    assert not missing


@pytest.mark.parametrize("page", documented_pages(), ids=lambda path: path.name)
def test_python_blocks_fit_the_line_length(page: Path) -> None:
    too_long = [
        f"{page.name}:{block.line + offset}"
        for block in python_blocks(page)
        if not block.output_of
        for offset, line in enumerate(block.code.splitlines())
        if len(line) > MAX_LINE_LENGTH
    ]
    assert not too_long, f"lines longer than {MAX_LINE_LENGTH} characters: {too_long}"


@pytest.mark.parametrize("page", documented_pages(), ids=lambda path: path.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        relative = target.split("#", 1)[0]
        resolved = (page.parent / relative).resolve()
        if resolved.exists():
            continue
        if resolved.parent == DOCS and resolved.name in OTHER_OWNERS_PAGES:
            continue  # written in parallel by their owners
        broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"
