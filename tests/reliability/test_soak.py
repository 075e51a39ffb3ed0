"""The fast profile of the fault-injection soak (``soak.py``; ``make soak`` runs the long one)."""

from __future__ import annotations

import pytest
from tests.reliability.soak import run_soak

OPERATIONS = 2500
INJECTED = {
    "single:ok",
    "single:error",
    "single:timeout",
    "single:hang",
    "single:cancelled",
    "single:uncopyable",
    "single:mutate",
    "single:large",
    "single:future",
    "single:skew",
    "single:nan",
    "single:old",
    "batch:not_mapping",
    "batch:wrong_key",
    "batch:omit",
    "derive:error",
    "derive:hang",
    "thread:ok",
    "thread:error",
    "publish:future",
    "publish:nan",
    "publish_many:refused",
}


@pytest.mark.parametrize("seed", [11, 2024])
def test_a_fast_soak_keeps_every_invariant(seed: int) -> None:
    summary = run_soak(OPERATIONS, seed)

    assert summary.violations == [], summary.report()
    assert set(summary.faults) >= INJECTED, sorted(INJECTED - set(summary.faults))
    assert min(summary.builds, summary.build_requests, summary.sessions) > 0
    assert min(summary.cancelled, summary.documented_errors, summary.returned) > 0
    assert summary.invariant_checks > 100 * OPERATIONS
