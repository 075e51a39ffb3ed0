"""Install the built wheel into a clean virtual environment and check it there, not the source.

Steps: a new venv (of ``--python``, by default the oldest supported CPython found); pytest from
``requirements/wheel-check.lock`` (hashes checked); the wheel with ``--no-index`` (so it must
need no runtime dependency); then, from a scratch directory outside the checkout, check that
``coalestra`` is imported from that venv, run the public API manifest test
(``tests/test_public_api.py``) and the product page's quick start (``tools/quickstart.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_OUTPUT = "{'price': '65000.00'}"
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = error\n"


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    shown = " ".join(str(part) for part in command)
    print(f"+ {shown}", flush=True)
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"check_wheel: failed (exit {result.returncode}): {shown}")
    return result.stdout


def check(wheel: Path, python: str) -> None:
    """Raise ``SystemExit`` with the failing step unless every check passes."""
    with tempfile.TemporaryDirectory(prefix="coalestra-wheel-") as scratch:
        where = Path(scratch)
        venv = where / "venv"
        _run(python, "-m", "venv", venv)
        py = venv / "bin" / "python"
        pip = (py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
        lock = ROOT / "requirements" / "wheel-check.lock"
        _run(*pip, "--require-hashes", "-r", lock)
        _run(*pip, "--no-index", wheel)
        work = where / "work"
        work.mkdir()
        shutil.copy(ROOT / "tests" / "test_public_api.py", work)
        shutil.copy(ROOT / "tools" / "quickstart.py", work)
        (work / "pytest.ini").write_text(PYTEST_INI)
        imported = _run(py, "-c", "import coalestra; print(coalestra.__file__)", cwd=work).strip()
        if not Path(imported).resolve().is_relative_to(venv.resolve()):
            raise SystemExit(f"check_wheel: coalestra came from {imported}, not the clean venv")
        _run(py, "-m", "pytest", "-q", "test_public_api.py", cwd=work)
        output = _run(py, "quickstart.py", cwd=work).strip()
        if output != QUICKSTART_OUTPUT:
            raise SystemExit(f"check_wheel: the quick start printed {output!r}")
        version = _run(py, "-c", "import sys; print(sys.version.split()[0])").strip()
        print(f"check_wheel: {wheel.name} installs and passes on Python {version}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--python", default=None, help="interpreter for the clean venv")
    args = parser.parse_args(argv)
    wheels = sorted(args.dist.glob("coalestra-*.whl"))
    if len(wheels) != 1:
        print(f"check_wheel: want one wheel in {args.dist}, found {wheels}", file=sys.stderr)
        return 1
    python = args.python
    if python is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pythons import find

        python = next((path for path in find().values() if path), sys.executable)
    check(wheels[0], python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
