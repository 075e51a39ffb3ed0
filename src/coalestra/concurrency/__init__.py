"""Builder-wide and per-source read capacity.

:class:`CapacityLimiter` is a FIFO-fair, cancellation-safe counting limiter;
:class:`CapacityController` combines one global limiter with optional per-source limiters
(source slot first, then global slot); :class:`CapacitySnapshot` is a reading of one limiter.
"""

from ._controller import CapacityController
from ._limiter import CapacityLimiter, CapacitySnapshot

__all__ = ["CapacityController", "CapacityLimiter", "CapacitySnapshot"]
