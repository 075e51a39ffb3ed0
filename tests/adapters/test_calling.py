"""How adapters call user functions: async, sync in a thread, sync inline, awaitable-returning;
results wrapped as payloads; ``supports`` held to returning a bool."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from coalestra.adapters import CallableSource
from coalestra.core import FetchContext, ResourceKey, SourcePayload, SourceProtocolError
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTCUSDT")


@pytest.fixture
def ctx() -> FetchContext:
    return FetchContext(requested_at=1_700_000_000.0, snapshot_id="t")


def source(fetcher: Any, *, supports: Any = None, **kwargs: Any) -> CallableSource:
    return CallableSource(
        name="src",
        priority=1,
        supports=supports or (lambda _key: True),
        fetcher=fetcher,
        **kwargs,
    )


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every ``asyncio.to_thread`` call the adapters make."""
    hops: list[str] = []
    real = asyncio.to_thread

    async def counting(function: Callable[..., Any], /, *args: Any) -> Any:
        hops.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return hops


# --- sync functions: thread or inline ---------------------------------------------------------


async def test_sync_fetcher_runs_in_a_worker_thread_by_default(ctx: FetchContext) -> None:
    seen: list[int] = []

    def fetch(key: ResourceKey, _context: FetchContext) -> str:
        seen.append(threading.get_ident())
        return key.subject

    payload = await source(fetch).fetch(KEY, ctx)
    assert payload.value == "BTCUSDT"
    assert len(seen) == 1
    assert seen[0] != threading.get_ident()


async def test_sync_fetcher_runs_inline_when_asked(
    ctx: FetchContext, thread_hops: list[str]
) -> None:
    seen: list[int] = []

    def fetch(key: ResourceKey, _context: FetchContext) -> str:
        seen.append(threading.get_ident())
        return key.subject

    payload = await source(fetch, run_sync_in_thread=False).fetch(KEY, ctx)
    assert payload.value == "BTCUSDT"
    assert seen == [threading.get_ident()]
    assert thread_hops == []


async def test_worker_thread_sees_the_callers_context_variables(ctx: FetchContext) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("req-7")
    payload = await source(lambda _key, _context: request_id.get()).fetch(KEY, ctx)
    assert payload.value == "req-7"


@pytest.mark.parametrize("in_thread", [True, False])
async def test_fetcher_exceptions_propagate_unchanged(ctx: FetchContext, in_thread: bool) -> None:
    class Boom(Exception):
        pass

    def fetch(_key: ResourceKey, _context: FetchContext) -> None:
        raise Boom("down")

    with pytest.raises(Boom, match="down"):
        await source(fetch, run_sync_in_thread=in_thread).fetch(KEY, ctx)


# --- async functions and awaitable-returning sync functions -----------------------------------


async def test_async_fetcher_is_awaited_on_the_loop_without_a_thread_hop(
    ctx: FetchContext, clock: VirtualClock, thread_hops: list[str]
) -> None:
    async def fetch(key: ResourceKey, _context: FetchContext) -> str:
        await asyncio.sleep(1.5)
        return key.subject

    start = clock.monotonic()
    assert (await source(fetch).fetch(KEY, ctx)).value == "BTCUSDT"
    assert clock.monotonic() - start == 1.5
    assert thread_hops == []


async def test_callable_object_with_async_call_is_treated_as_async(
    ctx: FetchContext, thread_hops: list[str]
) -> None:
    class Fetcher:
        async def __call__(self, key: ResourceKey, _context: FetchContext) -> str:
            await asyncio.sleep(0)
            return f"object:{key.subject}"

    assert (await source(Fetcher()).fetch(KEY, ctx)).value == "object:BTCUSDT"
    assert thread_hops == []


async def test_callable_object_with_sync_call_runs_in_a_thread(
    ctx: FetchContext, thread_hops: list[str]
) -> None:
    class Fetcher:
        def __call__(self, key: ResourceKey, _context: FetchContext) -> str:
            return f"sync-object:{key.subject}"

    assert (await source(Fetcher()).fetch(KEY, ctx)).value == "sync-object:BTCUSDT"
    assert len(thread_hops) == 1


@pytest.mark.parametrize("in_thread", [True, False])
async def test_lambda_returning_a_coroutine_is_awaited(ctx: FetchContext, in_thread: bool) -> None:
    async def lookup(key: ResourceKey) -> str:
        await asyncio.sleep(0.1)
        return f"awaited:{key.subject}"

    fetcher: Callable[[ResourceKey, FetchContext], Awaitable[str]] = lambda key, _ctx: lookup(key)  # noqa: E731
    payload = await source(fetcher, run_sync_in_thread=in_thread).fetch(KEY, ctx)
    assert payload.value == "awaited:BTCUSDT"


async def test_fetcher_receives_the_key_and_context(ctx: FetchContext) -> None:
    calls: list[tuple[ResourceKey, FetchContext]] = []

    async def fetch(key: ResourceKey, context: FetchContext) -> int:
        calls.append((key, context))
        return 1

    await source(fetch).fetch(KEY, ctx)
    assert calls == [(KEY, ctx)]


# --- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"price": "1"}, 0, None, "text", [1, 2]])
async def test_bare_values_are_wrapped(ctx: FetchContext, value: object) -> None:
    payload = await source(lambda _key, _context: value).fetch(KEY, ctx)
    assert isinstance(payload, SourcePayload)
    assert payload.value == value
    assert payload.observed_at is None
    assert dict(payload.metadata) == {}


async def test_payloads_pass_through_untouched(ctx: FetchContext, clock: VirtualClock) -> None:
    given = SourcePayload({"p": 1}, observed_at=clock.now() - 3, metadata={"seq": 9})

    async def fetch(_key: ResourceKey, _context: FetchContext) -> SourcePayload[dict[str, int]]:
        return given

    assert await source(fetch).fetch(KEY, ctx) is given


async def test_fetch_refuses_a_non_key(ctx: FetchContext) -> None:
    with pytest.raises(TypeError, match="key"):
        await source(lambda _key, _context: 1).fetch("market:price", ctx)  # type: ignore[arg-type]


# --- supports ---------------------------------------------------------------------------------


def test_supports_returns_the_functions_bool() -> None:
    src = source(lambda _k, _c: 1, supports=lambda key: key.subject == "BTCUSDT")
    assert src.supports(KEY) is True
    assert src.supports(ResourceKey("market", "price", "ETH")) is False


@pytest.mark.parametrize("result", [1, 0, None, "yes", [True]])
def test_supports_returning_a_non_bool_is_a_protocol_error(result: object) -> None:
    src = source(lambda _k, _c: 1, supports=lambda _key: result)
    with pytest.raises(SourceProtocolError, match=r"'src'.*bool"):
        src.supports(KEY)


def test_supports_returning_a_coroutine_is_a_protocol_error_without_warnings() -> None:
    async def check(_key: ResourceKey) -> bool:
        return True

    # A sync lambda wrapping an async function slips past the construction check.
    src = source(lambda _k, _c: 1, supports=lambda key: check(key))
    with pytest.raises(SourceProtocolError, match="coroutine"):
        src.supports(KEY)  # the coroutine is closed: no "never awaited" warning (an error here)


def test_supports_exceptions_propagate() -> None:
    def explode(_key: ResourceKey) -> bool:
        raise LookupError("no table")

    with pytest.raises(LookupError, match="no table"):
        source(lambda _k, _c: 1, supports=explode).supports(KEY)


def test_supports_refuses_a_non_key() -> None:
    with pytest.raises(TypeError, match="key"):
        source(lambda _k, _c: 1).supports(("market", "price"))  # type: ignore[arg-type]
