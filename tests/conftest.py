"""Every async test runs on :class:`coalestra.testing.VirtualTimeLoop`: timers jump."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from coalestra.testing import VirtualClock, VirtualTimeLoop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"virtual": VirtualTimeLoop}


@pytest.fixture
def clock() -> VirtualClock:
    """A clock on the running (virtual) loop's time."""
    return VirtualClock()
