"""Optional integrations of Coalestra with outside systems, each behind its own extra.

Nothing here is imported by ``import coalestra``: the core stays free of dependencies. Import an
integration's subpackage explicitly, e.g. ``coalestra.integrations.redis`` (the
``coalestra[redis]`` extra), which needs the ``redis`` package.
"""
