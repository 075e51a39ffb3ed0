"""A reader's copy that fails names the key and the snapshot, and keeps the copier's error as
its cause: as the build hands its values out inline (:func:`hand_out`), with metadata to copy or
not."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.orchestration.conftest import Single, keys, make_builder

from coalestra.core import FreshnessPolicy, PayloadIsolationError, SourcePayload
from coalestra.testing import VirtualClock

(A,) = keys("A")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


class FailingThird:
    """A payload copier whose third call fails: after the source boundary's copy and the
    cache's, the reader's copy (see test_write_copies)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("no copy for the reader")
        return copy.deepcopy(value)


def bare(key: Any, _ctx: Any) -> dict[str, Any]:
    return {"venue": key.subject, "levels": [1, 2]}


def with_mutable_metadata(key: Any, _ctx: Any) -> SourcePayload[Any]:
    return SourcePayload({"venue": key.subject}, metadata={"tags": ["a"]})


@pytest.mark.parametrize("fetch", [bare, with_mutable_metadata])
async def test_a_failed_reader_copy_names_the_key_and_the_snapshot(
    clock: VirtualClock, fetch: Any
) -> None:
    copier = FailingThird()
    builder = make_builder(
        [Single("rest", 1, fetch)], clock, default_policy=LONG, payload_copier=copier
    )

    with pytest.raises(PayloadIsolationError) as raised:
        await builder.build([A])

    assert copier.calls == 3
    assert f"{A} in snapshot '" in str(raised.value)
    assert isinstance(raised.value.__cause__, ValueError)


async def test_a_reader_copy_with_mutable_metadata_shares_nothing_with_the_cache(
    clock: VirtualClock,
) -> None:
    builder = make_builder([Single("rest", 1, with_mutable_metadata)], clock, default_policy=LONG)

    first = await builder.build([A])
    first[A].value["venue"] = "changed"
    second = await builder.build([A])

    assert second[A].value == {"venue": "A"}
    assert list(second[A].metadata["tags"]) == ["a"]
    assert second[A].from_cache
