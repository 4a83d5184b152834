"""A collection is made ready by whichever process comes first, and mid-way states hold.

Every service's indexer, `hacs index backfill` and each new pod open the same
collections at once. A CI run caught the race: the backfill had created a
collection and was adding its indexes when the running server saw it exist and
loaded it; the backfill's own load then failed ("can't change the index for
loaded collection"), and so did every later load of it by any process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.milvus_client.index import IndexParams

from services.kernel.retrieval.vector_index import RECORDS, IndexDoc, VectorIndex

DIMENSION = 7  # a collection of its own on the shared server: hacs_records_7


@pytest.fixture(params=["milvus-lite", "milvus-server"])
async def uri(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    uri = str(tmp_path / "milvus.db")
    if request.param == "milvus-server":
        uri = request.getfixturevalue("milvus_uri")
    yield uri
    client = MilvusClient(uri)
    client.drop_collection(f"hacs_{RECORDS}_{DIMENSION}")
    client.close()


async def opened(uri: str) -> VectorIndex:
    index = VectorIndex(uri, DIMENSION)
    await index.connect()
    return index


async def usable(index: VectorIndex) -> None:
    """A write is found again by a dense search filtered on an indexed field."""
    doc = IndexDoc(
        pk="setup-1",
        tenant_id="ward",
        name="tenants/ward/observations/o1",
        kind="Observation",
        text="x",
        vector=np.eye(DIMENSION, dtype=np.float32)[0],
        patient_id="p1",
    )
    await index.upsert(RECORDS, [doc])
    hits = await index.dense_search(
        RECORDS, "ward", np.eye(DIMENSION, dtype=np.float32)[0], 'patient_id == "p1"', 5, ["pk"]
    )
    assert [hit.pk for hit in hits] == ["setup-1"]


def half_made(index: VectorIndex, *, loaded_early: bool) -> set[str]:
    """What another process leaves mid-way: the collection and only its dense index;
    with `loaded_early`, loaded then, and its other indexes added after the load."""
    client = index.client
    name = index.collection(RECORDS)
    client.create_collection(name, schema=index._schema(), num_partitions=64)
    every = index._index_params(exclude=set())
    first, rest = IndexParams(every[:1]), IndexParams(every[1:])
    client.create_index(name, first)
    if loaded_early:
        client.load_collection(name)
        client.create_index(name, rest)
    return {param.field_name for param in every}


async def test_a_half_made_collection_is_completed_then_loaded(uri: str) -> None:
    index = await opened(uri)
    try:
        wanted = half_made(index, loaded_early=False)
        await index.ensure(RECORDS)
        name = index.collection(RECORDS)
        assert set(index.client.list_indexes(name)) == wanted
        assert index.client.get_load_state(name)["state"] == LoadState.Loaded
        await usable(index)
    finally:
        await index.close()


async def test_a_collection_loaded_before_its_last_index_is_loaded_again(uri: str) -> None:
    index = await opened(uri)
    try:
        if index.is_lite:
            pytest.skip("Milvus Lite has no load-time index check (and no filter indexes)")
        half_made(index, loaded_early=True)
        await index.ensure(RECORDS)
        await usable(index)
    finally:
        await index.close()


async def test_processes_opening_a_new_collection_at_once_all_succeed(uri: str) -> None:
    if not uri.startswith("http"):
        pytest.skip("Milvus Lite locks its file to one client")
    indexes = [await opened(uri) for _ in range(4)]
    try:
        await asyncio.gather(*(index.ensure(RECORDS) for index in indexes))
        for index in indexes:
            await usable(index)
    finally:
        for index in indexes:
            await index.close()
