"""Reading entries: one ``MGET`` for the keys, headers judged, derived values validated.

A derived value is served only while every dependency it records is stored at the recorded
version, transitively, as in the memory cache. Dependencies that were part of the same read are
checked from that read; the others are fetched with one more ``MGET`` per level of the
dependency tree (usually one: dependencies of dependencies are rarely missing from both). A
derived value found invalid is deleted, unless it was rewritten meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast, final

from redis.asyncio import Redis

from ...core import CacheLookup, FreshnessPolicy, ResourceKey, SnapshotValue
from ...core._lookups import MISS
from ._entries import HEADER_PEEK_BYTES, Header, decode, parse_header
from ._layout import KeyLayout, escape, key_name
from ._link import Link, RedisUnavailable
from ._scripts import Scripts
from ._serializers import Serializer
from ._stats import Counters

_log = logging.getLogger("coalestra.integrations.redis")


class Candidate(NamedTuple):
    """An entry that is usable by age; still to validate (if derived) and decode."""

    key: ResourceKey
    value_key: str
    raw: bytes
    header: Header
    age: float
    fresh: bool


@final
class Reader:
    """Turns raw entries into lookups (shared by reads and lease polls)."""

    def __init__(
        self,
        client: Redis,
        link: Link,
        scripts: Scripts,
        layout: KeyLayout,
        serializer: Serializer,
        counters: Counters,
        future_tolerance: float,
    ) -> None:
        self._future_tolerance = future_tolerance
        self._client = client
        self._link = link
        self._scripts = scripts
        self._layout = layout
        self._serializer = serializer
        self._counters = counters

    async def read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        """Look every key up in one ``MGET`` (plus dependency reads for derived values).

        Raises:
            RedisUnavailable: Redis could not be read.
        """
        value_key = self._layout.value_key
        names = [value_key(key_name(key)) for key in keys]
        return await self.judge(keys, names, await self._mget(names), now, policies)

    async def _mget(self, names: list[str]) -> list[bytes | None]:
        """One ``MGET`` (the client returns bytes: it never decodes responses)."""
        raws = await self._link.call(lambda: self._client.mget(names))
        return cast("list[bytes | None]", raws)

    async def judge(
        self,
        keys: Sequence[ResourceKey],
        value_keys: Sequence[str],
        raws: Sequence[bytes | None],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        """Lookups of raw entries read at ``now``: misses, fresh or stale hits."""
        results: dict[ResourceKey, CacheLookup] = {}
        headers: dict[str, Header] = {}
        candidates: list[Candidate] = []
        bad: list[tuple[str, bytes]] = []
        latest = now + self._future_tolerance
        for key, value_key, raw in zip(keys, value_keys, raws, strict=True):
            results[key] = MISS
            if raw is None:
                continue
            try:
                header = parse_header(raw)
                if header.observed_at > latest:
                    raise ValueError(f"observed_at {header.observed_at} is in the future")
            except ValueError as error:
                self._reject(key, f"malformed header: {error}")
                bad.append((value_key, raw))
                continue
            headers[key_name(key)] = header
            policy = policies[key]
            # A future stamp (clock skew) is kept as given and reads as age 0, never negative.
            age = max(0.0, now - header.observed_at)
            if age <= policy.max_stale_seconds:
                fresh = age <= policy.ttl_seconds
                candidates.append(Candidate(key, value_key, raw, header, age, fresh))
        if any(c.header.dependencies for c in candidates):
            candidates = await self._valid(candidates, headers)
        for candidate in candidates:
            value = self._decode(candidate)
            if value is None:
                bad.append((candidate.value_key, candidate.raw))
            else:
                results[candidate.key] = CacheLookup(value, candidate.fresh, True, candidate.age)
        if bad:
            await self.drop_bad(bad)
        self._count(results.values())
        return results

    async def drop_bad(self, bad: list[tuple[str, bytes]]) -> None:
        """Delete entries refused on read, unless rewritten meanwhile: a refused entry is an
        absent one, and must not sit there (with a high rank or a future date) refusing the
        writes that would replace it."""
        keys = [value_key for value_key, _ in bad]
        heads = [raw[:HEADER_PEEK_BYTES] for _, raw in bad]
        # If Redis fails here the entry was still read as a miss; the next reader drops it.
        with contextlib.suppress(RedisUnavailable):
            dropped = await self._link.call(
                lambda: self._scripts.drop_if_head(keys=keys, args=heads)
            )
            self._counters.dropped_bad_entries += int(dropped)

    def _decode(self, candidate: Candidate) -> SnapshotValue[Any] | None:
        try:
            return decode(
                candidate.key,
                candidate.raw,
                candidate.header,
                self._serializer,
                candidate.value_key,
                age=candidate.age,
                fresh=candidate.fresh,
            )
        except Exception as error:  # a hostile entry may break any decoder: never fail a read
            self._reject(candidate.key, str(error))
            return None

    def decode_previous(
        self, key: ResourceKey, value_key: str, raw: bytes, now: float
    ) -> SnapshotValue[Any] | None:
        """The revision a write compared with (``None`` if it cannot be read)."""
        try:
            header = parse_header(raw)
        except ValueError:
            return None
        age = max(0.0, now - header.observed_at)
        return self._decode(Candidate(key, value_key, raw, header, age, True))

    def _reject(self, key: ResourceKey, reason: str) -> None:
        self._counters.rejected_entries += 1
        if self._counters.rejected_entries == 1:  # once: a flood of bad entries must not flood logs
            _log.warning("coalestra: refused Redis cache entry for %s: %s", key, reason)

    def _count(self, lookups: Iterable[CacheLookup]) -> None:
        counters = self._counters
        for lookup in lookups:
            if lookup.value is None:
                counters.misses += 1
            elif lookup.fresh:
                counters.fresh_hits += 1
            else:
                counters.stale_hits += 1

    # -- derived values ---------------------------------------------------------------------

    async def _valid(
        self, candidates: list[Candidate], headers: dict[str, Header]
    ) -> list[Candidate]:
        """The candidates whose dependencies are current; invalid derived ones are dropped."""
        await self._load_dependencies(candidates, headers)
        memo: dict[str, bool] = {}
        kept: list[Candidate] = []
        invalid: list[Candidate] = []
        for candidate in candidates:
            if not candidate.header.dependencies or _current(
                key_name(candidate.key), headers, memo
            ):
                kept.append(candidate)
            else:
                invalid.append(candidate)
        if invalid:
            await self._drop(invalid)
        return kept

    async def _load_dependencies(
        self, candidates: list[Candidate], headers: dict[str, Header]
    ) -> None:
        seen = set(headers)
        wanted = {name for c in candidates for name, _ in c.header.dependencies if name not in seen}
        value_key = self._layout.value_key
        while wanted:
            names = sorted(wanted)
            seen.update(names)
            raws = await self._mget([value_key(name) for name in names])
            wanted = set()
            for name, raw in zip(names, raws, strict=True):
                if raw is None:
                    continue
                try:
                    header = parse_header(raw)
                except ValueError:
                    continue
                headers[name] = header
                wanted.update(dep for dep, _ in header.dependencies if dep not in seen)

    async def _drop(self, invalid: list[Candidate]) -> None:
        self._counters.dropped_derived += len(invalid)
        keys = [c.value_key for c in invalid]
        versions = [escape(c.header.version) for c in invalid]
        # If Redis fails here the value was still read as a miss; the next reader drops it.
        with contextlib.suppress(RedisUnavailable):
            await self._link.call(lambda: self._scripts.drop_if_version(keys=keys, args=versions))


def _current(name: str, headers: Mapping[str, Header], memo: dict[str, bool]) -> bool:
    """True when ``name`` is stored and every dependency it records is stored at the recorded
    version and is itself current (a dependency cycle counts as not current)."""
    known = memo.get(name)
    if known is not None:
        return known
    memo[name] = False
    header = headers.get(name)
    if header is None:
        return False
    for dependency, version in header.dependencies:
        found = headers.get(dependency)
        if found is None or found.version != version:
            return False
        if found.dependencies and not _current(dependency, headers, memo):
            return False
    memo[name] = True
    return True
