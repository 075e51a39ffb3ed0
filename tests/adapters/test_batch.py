"""CallableBatchSource: partial results, protocol errors, distinct keys, max_batch_size chunks."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from coalestra.adapters import CallableBatchSource
from coalestra.core import FetchContext, ResourceKey, SourcePayload, SourceProtocolError
from coalestra.testing import VirtualClock

KEYS = tuple(ResourceKey("market", "price", f"SYM{i}") for i in range(5))


@pytest.fixture
def ctx() -> FetchContext:
    return FetchContext(requested_at=1_700_000_000.0)


def batch(fetcher: Any, **kwargs: Any) -> CallableBatchSource:
    return CallableBatchSource(
        name="batch-src", priority=5, supports=lambda _key: True, fetcher=fetcher, **kwargs
    )


class Recorder:
    """An async batch fetcher answering every key it is asked for except ``skip``."""

    def __init__(self, skip: Collection[ResourceKey] = ()) -> None:
        self.calls: list[tuple[ResourceKey, ...]] = []
        self.skip = set(skip)

    async def __call__(self, keys: tuple[ResourceKey, ...], _context: FetchContext) -> Any:
        self.calls.append(keys)
        return {key: key.subject for key in keys if key not in self.skip}


async def test_returns_payloads_for_the_keys_the_fetcher_answered(ctx: FetchContext) -> None:
    fetcher = Recorder(skip={KEYS[1]})
    result = await batch(fetcher).fetch_many(KEYS[:3], ctx)
    assert dict(result) == {KEYS[0]: SourcePayload("SYM0"), KEYS[2]: SourcePayload("SYM2")}
    assert fetcher.calls == [KEYS[:3]]  # one call, a tuple in the caller's order


async def test_payload_values_pass_through(ctx: FetchContext, clock: VirtualClock) -> None:
    given = SourcePayload(1, observed_at=clock.now() - 1)
    result = await batch(lambda keys, _c: {keys[0]: given, keys[1]: 2}).fetch_many(KEYS[:2], ctx)
    assert result[KEYS[0]] is given
    assert result[KEYS[1]] == SourcePayload(2)


async def test_an_empty_mapping_means_nothing_found(ctx: FetchContext) -> None:
    assert dict(await batch(lambda _keys, _c: {}).fetch_many(KEYS, ctx)) == {}


async def test_no_keys_means_no_call(ctx: FetchContext) -> None:
    fetcher = Recorder()
    assert dict(await batch(fetcher).fetch_many([], ctx)) == {}
    assert fetcher.calls == []


async def test_duplicate_keys_are_fetched_once(ctx: FetchContext) -> None:
    fetcher = Recorder()
    result = await batch(fetcher).fetch_many([KEYS[0], KEYS[1], KEYS[0]], ctx)
    assert fetcher.calls == [(KEYS[0], KEYS[1])]
    assert set(result) == {KEYS[0], KEYS[1]}


@pytest.mark.parametrize("in_thread", [True, False])
async def test_sync_batch_fetcher_thread_or_inline(ctx: FetchContext, in_thread: bool) -> None:
    threads: list[int] = []

    def fetch(keys: tuple[ResourceKey, ...], _c: FetchContext) -> dict[ResourceKey, int]:
        threads.append(threading.get_ident())
        return dict.fromkeys(keys, 1)

    result = await batch(fetch, run_sync_in_thread=in_thread).fetch_many(KEYS[:2], ctx)
    assert len(result) == 2
    assert (threads[0] != threading.get_ident()) is in_thread


# --- max_batch_size ---------------------------------------------------------------------------


async def test_larger_requests_are_fetched_in_chunks_of_max_batch_size(
    ctx: FetchContext,
) -> None:
    fetcher = Recorder(skip={KEYS[3]})
    result = await batch(fetcher, max_batch_size=2).fetch_many(KEYS, ctx)
    assert fetcher.calls == [KEYS[0:2], KEYS[2:4], KEYS[4:5]]
    assert set(result) == set(KEYS) - {KEYS[3]}


async def test_a_request_within_max_batch_size_is_one_call(ctx: FetchContext) -> None:
    fetcher = Recorder()
    await batch(fetcher, max_batch_size=5).fetch_many(KEYS, ctx)
    assert fetcher.calls == [KEYS]


async def test_a_key_from_another_chunk_is_a_protocol_error(ctx: FetchContext) -> None:
    def fetch(keys: tuple[ResourceKey, ...], _c: FetchContext) -> dict[ResourceKey, int]:
        return {KEYS[0]: 1, keys[-1]: 2}  # KEYS[0] belongs to the first chunk only

    with pytest.raises(SourceProtocolError, match="market:price:SYM0"):
        await batch(fetch, max_batch_size=2, run_sync_in_thread=False).fetch_many(KEYS, ctx)


# --- protocol errors and bad input ------------------------------------------------------------


@pytest.mark.parametrize("returned", [[("k", 1)], None, "abc", 3, {1, 2}])
async def test_a_non_mapping_result_is_a_protocol_error(
    ctx: FetchContext, returned: object
) -> None:
    with pytest.raises(SourceProtocolError, match=r"^batch source batch-src must return a mapping"):
        await batch(lambda _keys, _c: returned).fetch_many(KEYS[:2], ctx)


async def test_an_unrequested_key_is_a_protocol_error_naming_source_and_key(
    ctx: FetchContext,
) -> None:
    extra = ResourceKey("market", "price", "EXTRA")

    async def fetch(keys: tuple[ResourceKey, ...], _c: FetchContext) -> Mapping[Any, int]:
        return {keys[0]: 1, extra: 2}

    with pytest.raises(
        SourceProtocolError,
        match=r"^batch source batch-src returned unrequested resources: market:price:EXTRA$",
    ):
        await batch(fetch).fetch_many(KEYS[:2], ctx)


async def test_keying_the_result_by_subject_is_a_protocol_error(ctx: FetchContext) -> None:
    # A common slip: returning {symbol: price} instead of {key: price}.
    with pytest.raises(
        SourceProtocolError, match=r"unrequested resources: 'SYM0' \(a str, not a ResourceKey\)"
    ):
        await batch(lambda keys, _c: {k.subject: 1 for k in keys}).fetch_many(KEYS[:1], ctx)


async def test_fetcher_exceptions_propagate(ctx: FetchContext) -> None:
    async def fetch(_keys: tuple[ResourceKey, ...], _c: FetchContext) -> None:
        raise ConnectionError("api down")

    with pytest.raises(ConnectionError, match="api down"):
        await batch(fetch).fetch_many(KEYS, ctx)


@pytest.mark.parametrize("keys", ["market:price", KEYS[0], 5, [KEYS[0], "x"]])
async def test_bad_keys_are_type_errors(ctx: FetchContext, keys: Any) -> None:
    fetcher = Recorder()
    with pytest.raises(TypeError, match="keys"):
        await batch(fetcher).fetch_many(keys, ctx)
    assert fetcher.calls == []


def test_supports_is_checked_like_any_source() -> None:
    src = CallableBatchSource(
        name="batch-src", priority=1, supports=lambda _key: "yes", fetcher=Recorder()
    )
    with pytest.raises(SourceProtocolError, match="bool"):
        src.supports(KEYS[0])
