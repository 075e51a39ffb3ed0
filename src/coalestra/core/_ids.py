"""Snapshot ids: 32 lower-case hex digits, as ``uuid.uuid4().hex`` has, made of the process's
random prefix of resource versions (``_values``: new in a forked child) and a counter. Unique
across processes like a uuid4, at the cost of a counter step instead of a system call per build
(a tenth of a joining build's fixed cost)."""

from __future__ import annotations

import itertools

from . import _values

_counter = itertools.count(1)


def new_snapshot_id() -> str:
    """A new unique snapshot id."""
    return f"{_values._VERSION_PREFIX}{next(_counter):022x}"
