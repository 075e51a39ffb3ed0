"""tools/check_version.py: the version and changelog checks of `make quality` and
`make release-check` pass when everything agrees and fail loudly when anything does not."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_version", ROOT / "tools/check_version.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cv = _load()

PYPROJECT_DYNAMIC = """\
[project]
name = "coalestra"
dynamic = ["version"]

[tool.hatch.version]
path = "src/coalestra/_version.py"
"""

CHANGELOG = """\
# Changelog

## Unreleased

- something new

## 1.2.2 (2026-11-30)

- older
"""


def make_project(
    tmp_path: Path,
    *,
    version: str = "1.2.3",
    pyproject: str = PYPROJECT_DYNAMIC,
    changelog: str = CHANGELOG,
) -> Path:
    (tmp_path / "src/coalestra").mkdir(parents=True)
    (tmp_path / "src/coalestra/_version.py").write_text(
        f'"""The version."""\n\n__version__ = "{version}"\n'
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "CHANGELOG.md").write_text(changelog)
    return tmp_path


def released(version: str = "1.2.3") -> str:
    return CHANGELOG.replace(
        "## Unreleased\n\n- something new\n\n", f"## {version} (2026-12-07)\n\n- new\n\n"
    )


def test_this_repository_agrees_with_itself() -> None:
    assert cv.check(ROOT) == []


def test_a_consistent_project_passes(tmp_path: Path) -> None:
    assert cv.check(make_project(tmp_path)) == []


def test_main_prints_one_summary_line_when_all_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cv.main(["--root", str(make_project(tmp_path))]) == 0
    assert "version 1.2.3: pyproject.toml, coalestra.__version__, CHANGELOG.md agree" in (
        capsys.readouterr().out
    )


def test_main_fails_loudly_naming_both_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pyproject = '[project]\nname = "coalestra"\nversion = "1.2.4"\n'
    root = make_project(tmp_path, pyproject=pyproject)

    assert cv.main(["--root", str(root)]) == 1

    err = capsys.readouterr().err
    assert "VERSION MISMATCH" in err
    assert "'1.2.4'" in err
    assert "'1.2.3'" in err


# -- pyproject ---------------------------------------------------------------------------------


def test_a_static_pyproject_version_must_match(tmp_path: Path) -> None:
    root = make_project(tmp_path, pyproject='[project]\nversion = "1.2.3"\n')
    assert cv.check(root) == []
    other = make_project(tmp_path / "other", pyproject='[project]\nversion = "2.0.0"\n')
    assert cv.check(other) == [
        "pyproject.toml says version '2.0.0' but src/coalestra/_version.py says '1.2.3'"
    ]


def test_a_dynamic_version_must_come_from_the_version_file(tmp_path: Path) -> None:
    pyproject = PYPROJECT_DYNAMIC.replace("src/coalestra/_version.py", "src/other.py")
    (problem,) = cv.check(make_project(tmp_path, pyproject=pyproject))
    assert "src/other.py" in problem


def test_a_pyproject_without_any_version_fails(tmp_path: Path) -> None:
    (problem,) = cv.check(make_project(tmp_path, pyproject='[project]\nname = "coalestra"\n'))
    assert "neither a version nor dynamic" in problem


def test_a_malformed_package_version_fails(tmp_path: Path) -> None:
    (problem,) = cv.check(make_project(tmp_path, version="1.2"))
    assert "not an X.Y.Z version: '1.2'" in problem


# -- changelog ---------------------------------------------------------------------------------


def test_an_unreleased_section_is_enough_without_a_tag(tmp_path: Path) -> None:
    assert cv.check(make_project(tmp_path)) == []


def test_a_dated_section_for_the_version_is_enough_too(tmp_path: Path) -> None:
    assert cv.check(make_project(tmp_path, changelog=released())) == []


def test_a_new_version_without_its_section_or_unreleased_fails(tmp_path: Path) -> None:
    changelog = CHANGELOG.replace("## Unreleased\n\n- something new\n\n", "")
    (problem,) = cv.check(make_project(tmp_path, changelog=changelog))
    assert problem == (
        "CHANGELOG.md has newest section 1.2.2 and no '## Unreleased' for version 1.2.3"
    )


def test_a_changelog_section_newer_than_the_package_fails(tmp_path: Path) -> None:
    problems = cv.check(make_project(tmp_path, changelog=released("1.3.0")))
    assert problems[0] == (
        "CHANGELOG.md has a section for 1.3.0 (2026-12-07), newer than the package version 1.2.3"
    )


def test_a_malformed_heading_fails(tmp_path: Path) -> None:
    changelog = CHANGELOG.replace("## 1.2.2 (2026-11-30)", "## 1.2.2 - November")
    (problem,) = cv.check(make_project(tmp_path, changelog=changelog))
    assert "is neither '## Unreleased' nor '## X.Y.Z (YYYY-MM-DD)'" in problem


def test_an_impossible_date_fails(tmp_path: Path) -> None:
    changelog = CHANGELOG.replace("2026-11-30", "2026-13-45")
    (problem,) = cv.check(make_project(tmp_path, changelog=changelog))
    assert "CHANGELOG.md line 7" in problem


def test_sections_out_of_order_fail(tmp_path: Path) -> None:
    changelog = CHANGELOG + "\n## 1.2.1 (2026-11-01)\n\n## 1.2.2 (2026-11-30)\n"
    problems = cv.check(make_project(tmp_path, changelog=changelog))
    assert "CHANGELOG.md: release sections are not newest first" in problems


# -- tag builds --------------------------------------------------------------------------------


def test_a_tag_build_passes_when_tag_version_and_dated_section_agree(tmp_path: Path) -> None:
    assert cv.check(make_project(tmp_path, changelog=released()), tag="v1.2.3") == []


def test_a_tag_that_is_not_the_package_version_fails(tmp_path: Path) -> None:
    problems = cv.check(make_project(tmp_path, changelog=released()), tag="v1.2.4")
    assert problems == ["tag 'v1.2.4' does not match the package version '1.2.3' (want 'v1.2.3')"]


def test_a_tag_without_the_v_fails(tmp_path: Path) -> None:
    (problem,) = cv.check(make_project(tmp_path, changelog=released()), tag="1.2.3")
    assert "want 'v1.2.3'" in problem


def test_a_tag_build_needs_a_dated_section_unreleased_is_not_enough(tmp_path: Path) -> None:
    problems = cv.check(make_project(tmp_path), tag="v1.2.3")
    assert problems == ["tag v1.2.3: CHANGELOG.md has no dated section '## 1.2.3 (YYYY-MM-DD)'"]


def test_a_tag_build_needs_its_section_to_be_the_newest(tmp_path: Path) -> None:
    changelog = released().replace("## 1.2.3 (2026-12-07)", "## 1.2.1 (2026-12-07)")
    changelog += "\n## 1.2.3 (2026-12-08)\n"
    problems = cv.check(make_project(tmp_path, changelog=changelog), tag="v1.2.3")
    assert "tag v1.2.3: the newest CHANGELOG.md section is 1.2.1, not 1.2.3" in problems


def test_main_reads_the_tag_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(tmp_path)
    assert cv.main(["--root", str(root), "--tag", "v9.9.9"]) == 1
    assert "tag 'v9.9.9' does not match" in capsys.readouterr().err
    assert cv.main(["--root", str(root), "--tag", ""]) == 0  # an empty tag: not a tag build


# -- built distributions -----------------------------------------------------------------------


def make_dist(
    tmp_path: Path, version: str = "1.2.3", requires: str = "", name: str | None = None
) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / f"coalestra-{name or version}.tar.gz").write_bytes(b"")
    wheel = dist / f"coalestra-{name or version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.4\nName: coalestra\nVersion: {version}\n{requires}"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"coalestra-{version}.dist-info/METADATA", metadata)
    return dist


def test_built_distributions_of_the_version_pass(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    extra = "Requires-Dist: redis>=5.0; extra == 'redis'\n"
    assert cv.check(root, dist=make_dist(tmp_path, requires=extra)) == []


def test_distributions_of_another_version_fail(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    problems = cv.check(root, dist=make_dist(tmp_path, version="1.2.3", name="1.2.0"))
    assert "sdist coalestra-1.2.0.tar.gz is not coalestra-1.2.3.tar.gz" in problems


def test_a_wheel_with_a_runtime_dependency_fails(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    (problem,) = cv.check(root, dist=make_dist(tmp_path, requires="Requires-Dist: attrs\n"))
    assert "runtime dependencies" in problem


def test_a_missing_distribution_fails(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    dist = make_dist(tmp_path)
    next(dist.glob("*.whl")).unlink()
    (problem,) = cv.check(root, dist=dist)
    assert "want exactly one wheel and one sdist" in problem
