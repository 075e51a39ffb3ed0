"""One version for the revisions a build writes together.

A resource version only tells revisions of the *same* key apart (B-VAL-3, B-CACHE-13: a derived
value records each dependency's version and is current while that key still has it), so the new
revisions of distinct keys that one level of a build writes in one cache call can share one
version string: one counter step and one string per write instead of per key (a cached entry
keeps ~64 bytes less). A later write, or another process, gets a new version (see
:func:`~coalestra.core._values.new_version`), so no key ever has two revisions of one version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from ._values import SnapshotValue, new_version

_set_version = SnapshotValue.__dict__["version"].__set__  # the slot: the class is frozen

V = TypeVar("V", bound=Sequence[SnapshotValue[Any]])


def share_version(values: V) -> V:
    """Give ``values`` one new version and return them.

    Only for new revisions of *distinct* keys, made by this build and not yet seen by anyone
    (not written, served or reported with their version): a value read from a cache keeps its
    version, and two revisions of one key must never share one.
    """
    if len(values) > 1:  # a single value keeps the version it was made with
        version = new_version()
        for value in values:
            _set_version(value, version)
    return values
