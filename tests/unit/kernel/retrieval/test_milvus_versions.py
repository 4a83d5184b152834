"""What HACS does differently by Milvus version (read from get_server_version)."""

from __future__ import annotations

import pytest

from services.kernel.retrieval.vector_index import VectorIndex, _misroutes_upserts, _supports_bm25


@pytest.mark.parametrize(
    ("version", "misroutes"),
    [
        ("v2.3.5-lite", True),  # the `milvus` wheel's server: upserts ignore the partition key
        ("v2.3.21", True),
        ("2.4.0", False),
        ("v2.5.4", False),
        ("unknown", True),  # an unreadable version takes the safe path (delete + insert)
    ],
)
def test_upserts_are_split_on_servers_that_misroute_them(version: str, misroutes: bool) -> None:
    assert _misroutes_upserts(version) is misroutes


@pytest.mark.parametrize(
    ("version", "bm25"),
    [("v2.3.5-lite", False), ("v2.4.9", False), ("v2.5.0", True), ("milvus_lite-3.2.2", True)],
)
def test_bm25_functions_need_milvus_2_5(version: str, bm25: bool) -> None:
    assert _supports_bm25(version) is bm25


def test_server_reads_are_bounded_and_writes_wait_until_readable_unless_strong() -> None:
    bounded = VectorIndex("http://milvus:19530", 384)
    assert bounded.read_options == {"consistency_level": "Bounded"}
    assert bounded._write_barrier is True
    strong = VectorIndex("http://milvus:19530", 384, read_consistency="strong")
    assert strong.read_options == {"consistency_level": "Strong"}
    assert strong._write_barrier is False  # every read waits instead
    lite = VectorIndex("/var/lib/hacs/milvus.db", 384)  # Milvus Lite reads its own writes
    assert lite.read_options == {} and lite._write_barrier is False
    with pytest.raises(ValueError, match="bounded or strong"):
        VectorIndex("http://milvus:19530", 384, read_consistency="eventually")
