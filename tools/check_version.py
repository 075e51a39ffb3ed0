"""Check that every place that states the package version agrees; fail loudly when one does not.

The places: ``pyproject.toml`` (a static ``version``, or ``dynamic = ["version"]`` read by
hatchling from ``src/coalestra/_version.py``), ``coalestra.__version__`` (that file),
``CHANGELOG.md``, built distributions (``--dist``), and on a tag build the tag (``--tag``).

CHANGELOG rules: every ``## `` heading is ``## Unreleased`` or ``## X.Y.Z (YYYY-MM-DD)``; no
release section is newer than the package version, and the newest one, if it is not the
package version, must be older (a new version needs its own section or ``## Unreleased``). A tag
build (``--tag vX.Y.Z``) also needs ``X.Y.Z`` to be the package version and to have a dated
section of its own, the newest one.

Usage: ``python tools/check_version.py [--root DIR] [--tag vX.Y.Z] [--dist DIR]``. Exit status 1
and one line per disagreement on stderr when anything disagrees; 0 and one summary line when
all agree. Standard library only (``tomllib`` or, on 3.10, a minimal reader).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import re
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VERSION_FILE = Path("src/coalestra/_version.py")
_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_HEADING = re.compile(r"^## (?P<title>.*?)\s*$")
_RELEASE = re.compile(r"^(?P<version>\S+) \((?P<date>\d{4}-\d{2}-\d{2})\)$")


@dataclass(frozen=True)
class Release:
    """One ``## X.Y.Z (YYYY-MM-DD)`` section of the changelog."""

    version: str
    date: str


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; ``ValueError`` for anything else."""
    match = _VERSION.match(text)
    if match is None:
        raise ValueError(f"not an X.Y.Z version: {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def package_version(root: Path) -> str:
    """``__version__`` as assigned in ``src/coalestra/_version.py`` (read, not imported)."""
    tree = ast.parse((root / VERSION_FILE).read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ValueError(f"{VERSION_FILE}: no __version__ = '...' assignment")


def pyproject_problems(root: Path, version: str) -> list[str]:
    """What in ``pyproject.toml`` disagrees with ``version``."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    project = _section(text, "project")
    static = re.search(r'^version\s*=\s*"([^"]*)"', project, re.MULTILINE)
    if static is not None:
        if static.group(1) != version:
            return [
                f"pyproject.toml says version {static.group(1)!r} "
                f"but {VERSION_FILE} says {version!r}"
            ]
        return []
    dynamic = re.search(r"^dynamic\s*=\s*\[([^\]]*)\]", project, re.MULTILINE)
    if dynamic is None or '"version"' not in dynamic.group(1):
        return ['pyproject.toml has neither a version nor dynamic = ["version"]']
    hatch = _section(text, "tool.hatch.version")
    path = re.search(r'^path\s*=\s*"([^"]*)"', hatch, re.MULTILINE)
    if path is None or Path(path.group(1)) != VERSION_FILE:
        found = None if path is None else path.group(1)
        return [f"pyproject.toml reads its version from {found!r}, not from {str(VERSION_FILE)!r}"]
    return []


def _section(text: str, name: str) -> str:
    """The body of TOML table ``[name]`` (up to the next table), or ``""``."""
    match = re.search(rf"^\[{re.escape(name)}\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    return "" if match is None else match.group(1)


def changelog_sections(text: str) -> tuple[bool, list[Release], list[str]]:
    """(has ``## Unreleased``, releases newest first as written, malformed headings)."""
    unreleased = False
    releases: list[Release] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        heading = _HEADING.match(line)
        if heading is None:
            continue
        title = heading.group("title")
        if title == "Unreleased":
            unreleased = True
            continue
        release = _RELEASE.match(title)
        if release is None:
            problems.append(
                f"CHANGELOG.md line {number}: {line!r} is neither '## Unreleased' "
                "nor '## X.Y.Z (YYYY-MM-DD)'"
            )
            continue
        try:
            parse_version(release.group("version"))
            datetime.date.fromisoformat(release.group("date"))
        except ValueError as error:
            problems.append(f"CHANGELOG.md line {number}: {error}")
            continue
        releases.append(Release(release.group("version"), release.group("date")))
    return unreleased, releases, problems


def changelog_problems(text: str, version: str, tag: str | None) -> list[str]:
    """What in the changelog disagrees with ``version`` (and with the tag, on a tag build)."""
    unreleased, releases, problems = changelog_sections(text)
    current = parse_version(version)
    newest = releases[0] if releases else None
    for release in releases:
        if parse_version(release.version) > current:
            problems.append(
                f"CHANGELOG.md has a section for {release.version} ({release.date}), "
                f"newer than the package version {version}"
            )
    if releases != sorted(releases, key=lambda r: parse_version(r.version), reverse=True):
        problems.append("CHANGELOG.md: release sections are not newest first")
    if tag is not None:
        dated = [release for release in releases if release.version == version]
        if not dated:
            problems.append(
                f"tag {tag}: CHANGELOG.md has no dated section '## {version} (YYYY-MM-DD)'"
            )
        elif newest is not None and newest.version != version:
            problems.append(
                f"tag {tag}: the newest CHANGELOG.md section is {newest.version}, not {version}"
            )
    elif not unreleased and (newest is None or newest.version != version):
        found = "no release section" if newest is None else f"newest section {newest.version}"
        problems.append(f"CHANGELOG.md has {found} and no '## Unreleased' for version {version}")
    return problems


def tag_problems(tag: str, version: str) -> list[str]:
    """A release tag is ``v`` + the package version."""
    if tag != f"v{version}":
        return [f"tag {tag!r} does not match the package version {version!r} (want 'v{version}')"]
    return []


def dist_problems(dist: Path, version: str) -> list[str]:
    """The built sdist and wheel carry ``version``, and the wheel has no runtime dependency."""
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    problems: list[str] = []
    if len(wheels) != 1 or len(sdists) != 1:
        names = sorted(path.name for path in dist.iterdir()) if dist.is_dir() else []
        return [f"{dist}: want exactly one wheel and one sdist, found {names}"]
    if sdists[0].name != f"coalestra-{version}.tar.gz":
        problems.append(f"sdist {sdists[0].name} is not coalestra-{version}.tar.gz")
    if not wheels[0].name.startswith(f"coalestra-{version}-"):
        problems.append(f"wheel {wheels[0].name} is not version {version}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        metadata = wheel.read(f"coalestra-{version}.dist-info/METADATA").decode("utf-8")
    stated = re.search(r"^Version: (.+)$", metadata, re.MULTILINE)
    if stated is None or stated.group(1).strip() != version:
        problems.append(f"wheel METADATA says Version {stated and stated.group(1)!r}")
    required = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    if required:
        problems.append(f"the wheel has runtime dependencies: {required}")
    return problems


def check(root: Path, tag: str | None = None, dist: Path | None = None) -> list[str]:
    """Every disagreement found, as one message each (empty: all agree)."""
    version = package_version(root)
    try:
        parse_version(version)
    except ValueError as error:
        return [f"{VERSION_FILE}: {error}"]
    problems = pyproject_problems(root, version)
    if tag is not None:
        problems += tag_problems(tag, version)
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    problems += changelog_problems(changelog, version, tag)
    if dist is not None:
        try:
            problems += dist_problems(dist, version)
        except (KeyError, OSError, zipfile.BadZipFile) as error:
            problems.append(f"{dist}: cannot read the wheel: {error}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--tag", default=None, help="a release tag, vX.Y.Z (tag builds only)")
    parser.add_argument("--dist", type=Path, default=None, help="a directory of built dists")
    args = parser.parse_args(argv)
    tag = args.tag or None
    problems = check(args.root, tag, args.dist)
    if problems:
        for problem in problems:
            print(f"VERSION MISMATCH: {problem}", file=sys.stderr)
        return 1
    version = package_version(args.root)
    where = ["pyproject.toml", "coalestra.__version__", "CHANGELOG.md"]
    if tag:
        where.append(f"tag {tag}")
    if args.dist is not None:
        where.append("sdist and wheel")
    print(f"version {version}: {', '.join(where)} agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
