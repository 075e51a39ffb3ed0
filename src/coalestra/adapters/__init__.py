"""Sources made from plain functions.

:class:`CallableSource` fetches one key per call, :class:`CallableBatchSource` many keys per
call, and :class:`CallableDerivedSource` computes a key from other keys. Their functions may be
``async def`` or synchronous; synchronous ones run in worker threads unless
``run_sync_in_thread=False`` (only for non-blocking local reads).
"""

from ._sources import CallableBatchSource, CallableDerivedSource, CallableSource

__all__ = ["CallableBatchSource", "CallableDerivedSource", "CallableSource"]
