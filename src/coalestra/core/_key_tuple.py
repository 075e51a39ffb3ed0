"""Validating and de-duplicating the keys a build is asked for: :func:`key_tuple`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import is_
from typing import cast

from ._keys import ResourceKey

_SEQUENCES = (list, tuple)  # taken as they are: no ABC check

# The last keys key_tuple was given (as a tuple: a list may change afterwards) and its answer.
# A build loop passes the same key objects in the same order each time; comparing them object
# by object (in C) is several times cheaper than validating and de-duplicating again, and
# returning the same tuple lets what is remembered per request tuple (the metrics' counts per
# resource type) be reused too. Keys equal but not identical, or in another order, miss.
# The price: the last request's keys stay alive until another request replaces them.
# One tuple, replaced whole, so a thread reads either the old pair or the new one.
_last: tuple[tuple[ResourceKey, ...], tuple[ResourceKey, ...]] = ((), ())


def key_tuple(name: str, keys: Iterable[ResourceKey]) -> tuple[ResourceKey, ...]:
    """Validate and de-duplicate keys (order kept); every entry point taking keys uses it."""
    global _last
    if type(keys) in _SEQUENCES:  # a list or tuple: no ABC check
        given, answer = _last
        sequence = cast("Sequence[ResourceKey]", keys)
        if len(sequence) == len(given) and all(map(is_, sequence, given)):
            return answer
    elif isinstance(cast(object, keys), (str, bytes, ResourceKey)) or not isinstance(
        keys, Iterable
    ):
        raise TypeError(f"{name} must be an iterable of ResourceKey")
    result = tuple(keys)  # checked before de-duplicating: not "unhashable type" for a bad entry
    if not all(map(isinstance, result, repeat(ResourceKey))):  # C-level: no Python per key
        bad = next(key for key in result if not isinstance(key, ResourceKey))
        raise TypeError(f"{name} must contain only ResourceKey, got {type(bad).__name__}")
    answer = tuple(dict.fromkeys(result))
    _last = (result, answer)
    return answer
