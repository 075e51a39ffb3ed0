"""The core stays free of Redis: only ``coalestra.integrations.redis`` may import it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import coalestra
import coalestra.integrations
import coalestra.integrations.redis as redis_integration

PACKAGE = Path(coalestra.__file__).resolve().parent
INTEGRATION = PACKAGE / "integrations" / "redis"


def imports_redis(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "redis" for a in node.names
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "redis"
        ):
            return True
    return False


def test_only_the_redis_integration_imports_redis() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if INTEGRATION not in path.parents and imports_redis(path)
    ]
    assert offenders == []
    assert any(imports_redis(path) for path in INTEGRATION.glob("*.py"))


def test_importing_coalestra_does_not_import_redis() -> None:
    code = "import sys, coalestra; assert 'redis' not in sys.modules, 'redis imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_integrations_package_exports_nothing() -> None:
    assert not getattr(coalestra.integrations, "__all__", [])
    assert coalestra.integrations.__doc__


def test_every_public_name_is_documented() -> None:
    for name in redis_integration.__all__:
        assert getattr(redis_integration, name) is not None
        if name != "DEFAULT_RETENTION":
            assert getattr(redis_integration, name).__doc__, name
