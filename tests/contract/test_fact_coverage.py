"""Every fact of the behavioural contract (0.5.7) has at least one test named after it.

The fact ids are copied here (the project never reads the contract files at test time). A test
for fact ``B-CACHE-2`` is a function in ``tests/contract/`` named ``test_b_cache_2_<what>``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

FACTS: dict[str, int] = {
    "KEYS": 1,
    "VAL": 7,
    "CACHE": 19,
    "PUB": 7,
    "SRC": 9,
    "SF": 1,
    "CAP": 4,
    "TIME": 5,
    "RES": 5,
    "ERR": 9,
    "DIAG": 5,
    "SESS": 10,
    "SYNC": 6,
    "OBS": 5,
    "ATTR": 3,
}
FACT_IDS = frozenset(f"B-{area}-{n}" for area, count in FACTS.items() for n in range(1, count + 1))
TEST_NAME = re.compile(r"^test_b_([a-z]+)_(\d+)(?:_|$)")


def _tested_fact_ids() -> set[str]:
    found: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                match = TEST_NAME.match(node.name)
                if match:
                    found.add(f"B-{match.group(1).upper()}-{match.group(2)}")
    return found


def test_the_contract_has_96_facts() -> None:
    assert len(FACT_IDS) == 96


def test_every_fact_has_a_test() -> None:
    assert sorted(FACT_IDS - _tested_fact_ids()) == []


def test_every_fact_test_names_a_real_fact() -> None:
    assert sorted(_tested_fact_ids() - FACT_IDS) == []
