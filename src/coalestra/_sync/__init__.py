"""The implementation of :mod:`coalestra.sync` (private: import from ``coalestra.sync``).

``_portal`` owns the loop thread and the one generic "run this coroutine there" portal;
``_backlog`` bounds non-blocking submissions; ``_core`` is the state a facade shares with its
session and publisher facades (and what its finalizer closes); the other modules are the three
public facades, thin layers over ``_core``.
"""
