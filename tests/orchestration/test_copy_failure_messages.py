"""A payload or metadata copy that fails on the miss path names the key and the source (or the
snapshot) exactly: the engine copies without rendering the key's text and names it only when
a copy fails, so these messages are checked word for word."""

from __future__ import annotations

from typing import Any

from tests.orchestration.conftest import Single, key, make_builder

from coalestra.core import ResourceResolutionError, SourcePayload
from coalestra.testing import VirtualClock

A = key("A")


class Uncopyable:
    def __deepcopy__(self, _memo: Any) -> Any:
        raise TypeError("no copies")


async def _failure_message(payload: Any, clock: VirtualClock) -> str:
    builder = make_builder([Single("odd", 5, lambda _k, _c: payload)], clock)
    snapshot = await builder.build([A], strict=False)
    error = snapshot.errors[A]
    assert isinstance(error, ResourceResolutionError)
    [failure] = error.failures
    assert (failure.source, failure.error_type) == ("odd", "PayloadIsolationError")
    return failure.message


async def test_a_payload_that_cannot_be_copied_names_its_key_and_source(
    clock: VirtualClock,
) -> None:
    message = await _failure_message([Uncopyable()], clock)

    assert message == (
        "Unable to isolate market:price:A from source 'odd'; "
        "payload type list does not support copying"
    )


async def test_metadata_that_cannot_be_copied_names_its_key_source_and_entry(
    clock: VirtualClock,
) -> None:
    message = await _failure_message(SourcePayload(1, metadata={"conn": Uncopyable()}), clock)

    assert message == (
        "Unable to isolate market:price:A from source 'odd' metadata 'conn'; "
        "payload type Uncopyable does not support copying"
    )
