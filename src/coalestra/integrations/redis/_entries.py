"""The bytes of one cached value: a small text header Lua can read, then the serialized body.

::

    c1 <authority_rank> <observed_at> <version> <dependency count>\\n
    <dependency name> <dependency version>\\n        (one line per dependency)
    <body: the serializer's bytes of source, fetched_at, latency, attempts, metadata, payload>

The first line is all the Lua scripts need to apply the write rules (rank, then observed_at) and
to judge freshness, and they read only its first bytes (``GETRANGE``), never the payload.
Dependency versions sit in the header too, so validating a derived value needs only the headers
of its dependencies. ``observed_at`` is written with ``repr`` (it round-trips exactly), and the
serializer signs the header together with the body (see
:class:`~coalestra.integrations.redis.PickleSerializer`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ...core import PayloadIsolationError, ResourceKey, SnapshotValue
from ._layout import escape, key_from_name, key_name, unescape
from ._serializers import Serializer

FORMAT_TAG = b"c1 "
HEADER_PEEK_BYTES = 128
"""How many bytes the scripts read to find the first header line (it is far shorter)."""

MAX_SAFE_RANK = 2**53
"""Lua compares ranks as doubles: larger magnitudes would compare inexactly, so they are refused."""


class Header(NamedTuple):
    """The parsed header of an entry; ``body_at`` is where the body starts."""

    rank: int
    observed_at: float
    version: str
    dependencies: tuple[tuple[str, str], ...]
    body_at: int


def _header(value: SnapshotValue[Any]) -> bytes:
    rank = value.authority_rank
    if not -MAX_SAFE_RANK <= rank <= MAX_SAFE_RANK:
        raise ValueError(
            f"authority_rank of {value.key} must be within +-2**53 for the Redis cache, got {rank}"
        )
    deps = value.dependency_versions
    lines = [f"c1 {rank} {float(value.observed_at)!r} {escape(value.version)} {len(deps)}\n"]
    lines.extend(f"{key_name(dep)} {escape(version)}\n" for dep, version in deps.items())
    return "".join(lines).encode()


def associated_data(value_key: str, raw: bytes, body_at: int) -> bytes:
    """What a signing serializer binds the body to: the Redis key and the whole header."""
    return value_key.encode() + b"\n" + raw[:body_at]


def encode(value: SnapshotValue[Any], serializer: Serializer, value_key: str) -> bytes:
    """The entry bytes of ``value`` stored under ``value_key``.

    Raises:
        PayloadIsolationError: the serializer refused the payload or metadata (names the key).
        ValueError: the authority rank is out of the range Lua compares exactly.
    """
    header = _header(value)
    record = {
        "k": key_name(value.key),  # so that a body copied under another key is refused
        "s": value.source,
        "f": value.fetched_at,
        "l": value.latency_ms,
        "a": value.attempts,
        "m": dict(value.metadata),
        "v": value.value,
    }
    try:
        body = serializer.dumps(record, context=associated_data(value_key, header, len(header)))
    except (TypeError, ValueError, RecursionError) as error:
        raise PayloadIsolationError(
            context=f"Redis cache write of {value.key} ({error})",
            value_type=type(value.value).__name__,
        ) from error
    return header + body


def parse_header(raw: bytes) -> Header:
    """Parse the header of entry bytes.

    Raises:
        ValueError: not an entry of this format.
    """
    if not raw.startswith(FORMAT_TAG):
        raise ValueError("not a coalestra cache entry")
    end = raw.index(b"\n")
    _tag, rank, observed, version, count = raw[:end].decode().split(" ")
    rank_number, observed_at = int(rank), float(observed)
    if not math.isfinite(observed_at):
        raise ValueError(f"observed_at is {observed_at}")
    if not -MAX_SAFE_RANK <= rank_number <= MAX_SAFE_RANK:
        raise ValueError(f"authority rank {rank_number} is out of range")
    deps: list[tuple[str, str]] = []
    for _ in range(int(count)):
        start, end = end + 1, raw.index(b"\n", end + 1)
        name, dep_version = raw[start:end].decode().split(" ")
        deps.append((name, unescape(dep_version)))
    return Header(rank_number, observed_at, unescape(version), tuple(deps), end + 1)


def decode(
    key: ResourceKey,
    raw: bytes,
    header: Header,
    serializer: Serializer,
    value_key: str,
    *,
    age: float,
    fresh: bool,
) -> SnapshotValue[Any]:
    """Rebuild the cached value of ``key`` as read at ``age`` (``fresh`` or stale).

    Raises:
        ValueError: the body was refused by the serializer (unsigned, tampered), is malformed, or
            belongs to another key.
    """
    record = serializer.loads(
        raw[header.body_at :], context=associated_data(value_key, raw, header.body_at)
    )
    if record.get("k") != key_name(key):
        raise ValueError(f"entry stored under {key} belongs to key {record.get('k')!r}")
    try:
        return SnapshotValue(
            key=key,
            value=record["v"],
            source=record["s"],
            observed_at=header.observed_at,
            fetched_at=record["f"],
            age_seconds=age,
            stale=not fresh,
            from_cache=True,
            latency_ms=record["l"],
            attempts=record["a"],
            metadata=record["m"],
            authority_rank=header.rank,
            version=header.version,
            dependency_versions={key_from_name(n): v for n, v in header.dependencies},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed cache entry for {key}: {error}") from error
