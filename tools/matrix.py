"""`make matrix`: the test suite on every supported CPython (3.10-3.13) found on this machine.

Each version gets its own virtual environment, ``.venv-X.Y``, built from the lock file exactly
as ``make`` builds ``.venv`` (rebuilt when the lock or pyproject.toml changes). Versions that
cannot be found are listed as NOT FOUND; they fail the run only with ``--require-all`` (CI).
Extra arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pythons import SUPPORTED, find

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.lock"
PIP = ("-m", "pip", "install", "--quiet", "--disable-pip-version-check")


def ensure_venv(version: str, interpreter: str) -> Path:
    """``.venv-X.Y`` with the locked tools and the project (editable), made if out of date."""
    venv = ROOT / f".venv-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    inputs = (LOCK, ROOT / "pyproject.toml")
    if stamp.exists() and all(stamp.stat().st_mtime >= p.stat().st_mtime for p in inputs):
        return python
    print(f"== {version}: building {venv.name} from {LOCK.relative_to(ROOT)}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), *PIP, "--require-hashes", "-r", str(LOCK)], check=True)
    subprocess.run(
        [str(python), *PIP, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True
    )
    stamp.touch()
    return python


def run(version: str, interpreter: str, pytest_args: Sequence[str]) -> tuple[bool, str]:
    """Build the venv and run the suite; (passed, one-line summary)."""
    started = time.monotonic()
    try:
        python = ensure_venv(version, interpreter)
    except subprocess.CalledProcessError as error:
        return False, f"could not build its environment ({error})"
    print(f"== {version}: pytest ({interpreter})", flush=True)
    result = subprocess.run([str(python), "-m", "pytest", "tests", *pytest_args], cwd=ROOT)
    took = time.monotonic() - started
    status = "passed" if result.returncode == 0 else f"FAILED (pytest exit {result.returncode})"
    return result.returncode == 0, f"{status} in {took:.0f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true", help="fail if a version is missing")
    parser.add_argument("--versions", default=",".join(SUPPORTED), help="e.g. 3.10,3.13")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    found = find(args.versions.split(","))
    results: dict[str, str] = {}
    ok = True
    for version, interpreter in found.items():
        if interpreter is None:
            results[version] = f"NOT FOUND (not on PATH as python{version}, not in pyenv)"
            ok = ok and not args.require_all
            continue
        passed, summary = run(version, interpreter, args.pytest_args)
        results[version] = summary
        ok = ok and passed
    print("\n== matrix")
    for version, summary in results.items():
        print(f"  Python {version}: {summary}")
    missing = [version for version, path in found.items() if path is None]
    if missing:
        print(f"  could not find: {', '.join(missing)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
