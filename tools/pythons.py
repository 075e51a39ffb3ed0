"""Find the CPython interpreters we support (3.10-3.13) on this machine: PATH, then pyenv.

``python tools/pythons.py`` prints ``X.Y path`` for each version found and ``X.Y -`` for each
one missing; ``--oldest`` prints only the path of the oldest one found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def version_of(interpreter: str) -> str | None:
    """``X.Y`` of a CPython interpreter, or ``None`` if it is not one (or does not run)."""
    probe = "import sys, platform; print(platform.python_implementation(), *sys.version_info[:2])"
    try:
        out = subprocess.run(
            [interpreter, "-c", probe], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 3 or out[0] != "CPython":
        return None
    return f"{out[1]}.{out[2]}"


def _candidates(version: str) -> list[str]:
    found = [shutil.which(f"python{version}")]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if root.is_dir():
        # Newest patch release first: 3.10.13 before 3.10.9.
        def patch(path: Path) -> tuple[int, ...]:
            return tuple(int(p) if p.isdigit() else -1 for p in path.name.split("."))

        dirs = sorted(root.glob(f"{version}.*"), key=patch, reverse=True)
        found += [str(d / "bin" / "python") for d in dirs if (d / "bin" / "python").exists()]
    return [path for path in found if path]


def find(versions: Sequence[str] = SUPPORTED) -> dict[str, str | None]:
    """``{"3.10": path or None, ...}``: the first working interpreter of each version."""
    result: dict[str, str | None] = {}
    for version in versions:
        result[version] = next(
            (path for path in _candidates(version) if version_of(path) == version), None
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oldest", action="store_true", help="print the oldest one found")
    args = parser.parse_args(argv)
    found = find()
    if args.oldest:
        oldest = next((path for path in found.values() if path), None)
        if oldest is None:
            print("no supported CPython (3.10-3.13) found", file=sys.stderr)
            return 1
        print(oldest)
        return 0
    for version, path in found.items():
        print(version, path or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
