"""Coalestra: consistent snapshots of many resources from prioritized read-only sources.

Every public name is importable from here; each area also has its own subpackage
(``coalestra.core``, ``coalestra.cache``, ...).
"""

from ._version import __version__
from .core import *  # noqa: F403
from .core import __all__ as _core_all

__all__ = ["__version__", *_core_all]
