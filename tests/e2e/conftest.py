from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import RunningPlatform, start_hacs_up


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """The platform as `make up` starts it (SQLite, local keys), behind a real Envoy."""
    running = start_hacs_up(
        tmp_path_factory.mktemp("hacs-up"),
        # Low enough for a test to reach, high enough for the rest of the module.
        HACS_EDGE_CALLS_PER_MINUTE="40",
        HACS_EDGE_TOKEN_CALLS_PER_MINUTE="30",
        HACS_EDGE_OPEN_CALLS_PER_MINUTE="60",
        # Clients told apart by X-Forwarded-For, as behind a cloud load balancer.
        HACS_EDGE_TRUSTED_PROXY_HOPS="1",
    )
    yield running
    assert running.stop() == 0, Path(running.log).read_text()[-3000:]
