"""The restore drill at a small size: pg_dump, lose the database and Milvus, pg_restore,
`hacs index backfill --all-tenants`, and the platform answers as before.

bench/support/restore_drill.py is the drill (bench/restore_drill.py runs it at size and
prints the figures): `hacs serve` with every service on PostgreSQL and a real Milvus
server, records, knowledge and an agent's memories written through the gRPC API, a
backup taken while another tenant writes, the database dropped and every HACS
collection dropped, then the restore and the rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.support.restore_data import DrillSize
from bench.support.restore_drill import run_drill
from bench.support.restore_platform import DroppedCollections

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SIZE = DrillSize(patients=40, observations_per_patient=2, memories=60, medquad_documents=0)


async def test_the_restored_platform_answers_as_before(
    tmp_path: Path, postgres_admin_url: str, milvus_uri: str
) -> None:
    result = await run_drill(
        tmp_path, SIZE, admin_url=postgres_admin_url, milvus=DroppedCollections(milvus_uri)
    )
    print(json.dumps(result.figures, indent=2))
    assert result.problems == []
    figures = result.figures
    assert figures["data_set"]["records"] == 40 * 3 and figures["data_set"]["memories"] == 60
    # Every table as in the snapshot (checked above), and there was something in each.
    assert figures["tables"]["records"] >= 120 and figures["tables"]["knowledge_chunks"] > 0
    point = figures["recovery_point"]
    assert point["live_writes_acknowledged_before_snapshot"] > 0
    assert point["of_which_restored"] == point["live_writes_acknowledged_before_snapshot"]
    assert point["of_which_restored_wrongly"] == 0
    rebuilt = {r["index"]: r["items"] for r in figures["recovery"]["rebuild"]
               if r["tenant"] == "drill"}  # fmt: skip
    # Records read: the 120 indexed and the live memories (records too, kept out of Search).
    assert rebuilt["records"] >= 120 and rebuilt["memory"] == 60 and rebuilt["knowledge"] > 0
    counts = figures["answers"]["milvus_rows_of_the_tenant"]
    assert all(counts.values()) and len(counts) == 6  # records, knowledge, 4 of memory
    assert figures["answers"]["questions"] == 19
