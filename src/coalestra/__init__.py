"""Coalestra: consistent snapshots of many resources from prioritized read-only sources.

Every public name is importable from here; each area also has its own subpackage:
``coalestra.core`` (values, protocols, errors), ``coalestra.cache`` (cache and publisher),
``coalestra.adapters`` (callable sources), ``coalestra.orchestration`` (builder and sessions),
``coalestra.resilience`` (retries and circuits), ``coalestra.concurrency`` (capacity),
``coalestra.observability`` (sinks) and ``coalestra.sync`` (blocking facades).
"""

from ._version import __version__
from .adapters import *  # noqa: F403
from .adapters import __all__ as _adapters_all
from .cache import *  # noqa: F403
from .cache import __all__ as _cache_all
from .concurrency import *  # noqa: F403
from .concurrency import __all__ as _concurrency_all
from .core import *  # noqa: F403
from .core import __all__ as _core_all
from .observability import *  # noqa: F403
from .observability import __all__ as _observability_all
from .orchestration import *  # noqa: F403
from .orchestration import __all__ as _orchestration_all
from .resilience import *  # noqa: F403
from .resilience import __all__ as _resilience_all
from .sync import *  # noqa: F403
from .sync import __all__ as _sync_all

__all__ = [
    "__version__",
    *_adapters_all,
    *_cache_all,
    *_concurrency_all,
    *_core_all,
    *_observability_all,
    *_orchestration_all,
    *_resilience_all,
    *_sync_all,
]
