"""The errors raised when a closed object is used.

A closed builder or synchronous facade raises a ``RuntimeError`` with an exact message (the
published contract). :class:`ClosedError` is that ``RuntimeError``, and also a
:class:`SessionClosedError`, so code written against our earlier releases, which raised
``SessionClosedError`` for every closed object, keeps catching it. Only an async
:class:`~coalestra.orchestration.SnapshotSession` closed with ``close()`` raises a plain
``SessionClosedError("SnapshotSession is closed")``.
"""

from __future__ import annotations

from typing import final

from ._errors import SessionClosedError

BUILDER_CLOSED = "SnapshotBuilder is closed"
SESSION_CLOSED = "SnapshotSession is closed"
SYNC_BUILDER_CLOSED = "SyncSnapshotBuilder is closed"
SYNC_SESSION_CLOSED = "SyncSnapshotSession is closed"


@final
class ClosedError(SessionClosedError, RuntimeError):
    """A closed builder, synchronous facade or synchronous session was used."""


def session_closed() -> SessionClosedError:
    """The error of a closed async session."""
    return SessionClosedError(SESSION_CLOSED)
