"""Client connections are recycled for load balancing, unless the setting turns it off."""

from __future__ import annotations

from pathlib import Path

from services.app.server import connection_options
from services.common.settings import Settings
from services.evals.platform import _overrides


def test_connections_are_recycled_by_default_and_kept_when_asked() -> None:
    default = dict(connection_options(Settings.from_env({})))
    assert default["grpc.max_connection_age_ms"] == 1_800_000
    assert default["grpc.max_connection_age_grace_ms"] == 60_000
    kept = dict(
        connection_options(Settings.from_env({"HACS_GRPC_MAX_CONNECTION_AGE_SECONDS": "0"}))
    )
    assert "grpc.max_connection_age_ms" not in kept
    assert kept["grpc.keepalive_time_ms"] == default["grpc.keepalive_time_ms"]


def test_evaluation_platforms_keep_their_connections(tmp_path: Path) -> None:
    # An ingest of a large corpus is one long stream: `hacs eval rag` on MedQuAD was cut
    # with UNAVAILABLE by the 30-minute recycling whenever the machine ran slower.
    settings = Settings.from_env({}, **_overrides(tmp_path, "tenant,rag"))
    assert "grpc.max_connection_age_ms" not in dict(connection_options(settings))
