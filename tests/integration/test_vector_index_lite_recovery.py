"""A Milvus Lite file left by a process killed mid-flush serves each document once.

Milvus Lite 3.2 commits a flush (its manifest names the new segment) before it
deletes the write-ahead log the segment came from. A process killed between the
two replays that log on the next open, and every row of the flush is then there
twice: counted twice (a CI run of the crash test saw "60 documents indexed for 56
records") and returned twice by search. The kill is placed exactly there by a
child process whose log deletion exits the process instead — the real Milvus Lite
engine and files, killed at the one moment a SIGKILL would have to hit by chance.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient

from services.kernel.retrieval.vector_index import RECORDS, IndexDoc, VectorIndex

DIMENSION = 6
DOCS = 10
REPO = Path(__file__).resolve().parents[2]

WRITE_THEN_DIE_IN_FLUSH = """
import asyncio, os, sys
import numpy as np
from milvus_lite.storage import wal
from services.kernel.retrieval.vector_index import RECORDS, IndexDoc, VectorIndex

async def main(uri):
    index = VectorIndex(uri, {dimension})
    await index.connect()
    docs = [
        IndexDoc(pk=f"ward/observations/o{{i}}", tenant_id="ward",
                 name=f"tenants/ward/observations/o{{i}}", kind="Observation",
                 text=f"note {{i}}", vector=np.eye({dimension}, dtype=np.float32)[i % {dimension}],
                 patient_id=f"p{{i}}")
        for i in range({docs})
    ]
    await index.upsert(RECORDS, docs)
    wal.WAL.close_and_delete = lambda self: os._exit(9)  # killed after the manifest commit
    await index.flush(RECORDS)

asyncio.run(main(sys.argv[1]))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_rows_a_killed_flush_left_twice_are_served_once(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    died = _python(WRITE_THEN_DIE_IN_FLUSH.format(dimension=DIMENSION, docs=DOCS), uri)
    assert died.returncode == 9, died.stderr[-2000:]
    collection = f"hacs_{RECORDS}_{DIMENSION}"
    # The state the crash left: every row of the flush twice (Milvus Lite itself).
    # Read in this process: the index below shares its Milvus Lite server (one per
    # file per process). A clean close would flush and compact the copies away.
    client = MilvusClient(uri)
    client.load_collection(collection)
    assert len(client.query(collection, filter='pk != ""', output_fields=["pk"])) == 2 * DOCS
    client.release_collection(collection)  # as a new process finds it

    index = VectorIndex(uri, DIMENSION)
    await index.connect()
    try:
        assert await index.count(RECORDS, "ward") == DOCS
        hits = await index.dense_search(
            RECORDS, "ward", np.ones(DIMENSION, dtype=np.float32), "", 2 * DOCS, ["pk", "name"]
        )
        expected = sorted(f"ward/observations/o{i}" for i in range(DOCS))
        assert sorted(hit.pk for hit in hits) == expected
        assert {hit.fields["name"] for hit in hits} == {
            f"tenants/ward/observations/o{i}" for i in range(DOCS)
        }
        # Written again whole: a new write to one of them replaces it, and a later
        # open finds nothing to repair.
        await index.upsert(
            RECORDS,
            [
                IndexDoc(
                    pk="ward/observations/o0",
                    tenant_id="ward",
                    name="tenants/ward/observations/o0",
                    kind="Observation",
                    text="amended",
                    vector=np.eye(DIMENSION, dtype=np.float32)[1],
                    patient_id="p0",
                    version=2,
                )
            ],
        )
        assert await index.count(RECORDS, "ward") == DOCS
    finally:
        await index.close()
