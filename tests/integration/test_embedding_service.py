"""EmbeddingService over gRPC with the shipped model (and a registered copy of it)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hacs.client import error_details
from hacs.embedding.v1 import embedding_service_pb2 as pb
from hacs.embedding.v1 import embedding_service_pb2_grpc, model_pb2

from services.kernel.embedding.model_config import shipped_model_path
from tests.support.harness import Harness, bearer, make_settings, running_platform


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    root = tmp_path_factory.mktemp("embedding")
    settings = make_settings(
        root / "data", f"sqlite+aiosqlite:///{root / 'hacs.db'}", services="tenant,embedding"
    )
    async with running_platform(settings) as harness:
        yield harness


def stub(platform: Harness) -> embedding_service_pb2_grpc.EmbeddingServiceStub:
    return embedding_service_pb2_grpc.EmbeddingServiceStub(platform.channel)


async def test_embed_reports_model_device_tokens_and_truncation(platform: Harness) -> None:
    tenant = await platform.new_tenant()
    _, agent = await platform.new_actor(tenant, "scribe", "agent")
    reply = await stub(platform).Embed(
        pb.EmbedRequest(texts=["blood pressure 150/95", "word " * 400]), metadata=bearer(agent)
    )
    assert (reply.model, reply.dimension, reply.device) == ("models/all-minilm-l6-v2", 384, "cpu")
    assert reply.normalized and reply.truncated_count == 1
    first, second = reply.embeddings
    assert (
        not first.truncated
        and second.truncated
        and second.original_token_count > second.token_count == 256
    )
    assert abs(np.linalg.norm(np.array(first.values)) - 1.0) < 1e-4


async def test_reject_policy_refuses_long_texts_by_index(platform: Harness) -> None:
    tenant = await platform.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(platform).Embed(
            pb.EmbedRequest(
                texts=["fine", "word " * 400],
                options=pb.EmbedOptions(truncation=pb.TRUNCATION_POLICY_REJECT),
            ),
            metadata=bearer(tenant.admin_token),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(caught.value)["BadRequest"].field_violations] == [
        "texts[1]"
    ]


async def test_streaming_embeds_groups_with_their_ids(platform: Harness) -> None:
    tenant = await platform.new_tenant()

    async def messages() -> AsyncIterator[pb.EmbedStreamRequest]:
        yield pb.EmbedStreamRequest(config=pb.EmbedStreamConfig())
        for start in (0, 3):
            yield pb.EmbedStreamRequest(
                texts=pb.EmbedStreamTexts(
                    items=[
                        pb.TextItem(id=f"t{i}", text=f"note {i}") for i in range(start, start + 3)
                    ]
                )
            )

    ids = []
    async for reply in stub(platform).EmbedStream(messages(), metadata=bearer(tenant.admin_token)):
        ids += [item.id for item in reply.items]
        assert all(len(item.embedding.values) == 384 for item in reply.items)
    assert ids == [f"t{i}" for i in range(6)]


async def test_registering_models_is_for_operators_and_checks_files(
    platform: Harness, tmp_path: Path
) -> None:
    operator = bearer(await platform.operator_token())
    tenant = await platform.new_tenant()
    copy = tmp_path / "minilm-copy"
    shutil.copytree(shipped_model_path(), copy)
    request = pb.RegisterModelRequest(model_id="minilm-copy", local_path=str(copy))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub(platform).RegisterModel(request, metadata=bearer(tenant.admin_token))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    registered = await stub(platform).RegisterModel(request, metadata=operator)
    assert (
        registered.model.state == model_pb2.MODEL_STATE_READY and registered.model.dimension == 384
    )
    user = bearer(tenant.admin_token)
    reply = await stub(platform).Embed(
        pb.EmbedRequest(model="models/minilm-copy", texts=["asthma"]), metadata=user
    )
    default = await stub(platform).Embed(pb.EmbedRequest(texts=["asthma"]), metadata=user)
    np.testing.assert_allclose(reply.embeddings[0].values, default.embeddings[0].values, atol=1e-5)

    broken = tmp_path / "broken"
    shutil.copytree(shipped_model_path(), broken)
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.txt").unlink()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub(platform).RegisterModel(
            pb.RegisterModelRequest(model_id="broken", local_path=str(broken)), metadata=operator
        )
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(broken) in (missing.value.details() or "") and "tokenizer" in (
        missing.value.details() or ""
    )
    listed = await stub(platform).ListModels(pb.ListModelsRequest(), metadata=user)
    assert [m.name for m in listed.models] == ["models/all-minilm-l6-v2", "models/minilm-copy"]


async def test_rerank_without_a_reranker_says_what_to_do(platform: Harness) -> None:
    tenant = await platform.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(platform).Rerank(
            pb.RerankRequest(query="dose in CKD", passages=["renal dosing"]),
            metadata=bearer(tenant.admin_token),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "register" in (caught.value.details() or "").lower()


async def test_embedding_tokens_are_metered_and_the_monthly_quota_refuses_with_retry_info(
    platform: Harness,
) -> None:
    """The tokens of a known batch, counted with the model's own tokenizer, are the tenant's
    usage; a quota of exactly that many lets the call through and refuses the next."""
    from google.protobuf.timestamp_pb2 import Timestamp
    from hacs.tenant.v1 import tenant_pb2
    from hacs.tenant.v1 import tenant_service_pb2 as tpb
    from transformers import AutoTokenizer

    from services.common.db.base import utcnow
    from services.common.runtime.quotas import period_of
    from services.kernel.embedding.model_config import read_model_config

    model = "models/all-minilm-l6-v2"
    texts = [
        "blood pressure 150/95",
        "Metformin is contraindicated when the eGFR is below 30 mL/min/1.73 m2.",
        "word " * 400,  # cut to the model's maximum: only what was encoded counts
    ]
    config = read_model_config(model, shipped_model_path())
    tokenizer = AutoTokenizer.from_pretrained(str(shipped_model_path()), local_files_only=True)
    counted = [
        len(ids) for ids in tokenizer([config.document_prefix + t for t in texts])["input_ids"]
    ]
    expected = sum(min(n, config.max_length) for n in counted)
    assert counted == [7, 26, 402] and expected == 7 + 26 + 256

    tenant = await platform.new_tenant(
        limits=tenant_pb2.TenantLimits(embedding_tokens_per_month=expected)  # type: ignore[arg-type]
    )
    _, agent = await platform.new_actor(tenant, "scribe", "agent")
    reply = await stub(platform).Embed(
        pb.EmbedRequest(model=model, texts=texts), metadata=bearer(agent)
    )
    assert sum(e.token_count for e in reply.embeddings) == expected

    with pytest.raises(grpc.aio.AioRpcError) as refused:  # at the quota: the next call waits
        await stub(platform).Embed(pb.EmbedRequest(model=model, texts=["asthma"]),
                                   metadata=bearer(agent))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error_details(refused.value)
    month_end = period_of("month", utcnow())[1]
    delay = details["RetryInfo"].retry_delay.seconds
    assert 0 < (month_end - utcnow()).total_seconds() - delay < 60
    assert details["QuotaFailure"].violations[0].subject == tenant.name
    assert f"used {expected:,} of its {expected:,} embedding tokens" in (
        refused.value.details() or ""
    )
    other = await platform.new_tenant()  # another tenant's quota is its own
    await stub(platform).Embed(pb.EmbedRequest(model=model, texts=["asthma"]),
                               metadata=bearer(other.admin_token))  # fmt: skip

    now = utcnow()
    usage = await platform.tenant.ExportUsage(
        tpb.ExportUsageRequest(
            parent=tenant.name,
            start_time=Timestamp(seconds=int(now.timestamp()) - 3600),
            end_time=Timestamp(seconds=int(now.timestamp()) + 1),
            metrics=["embedding_tokens", "errors"],
        ),
        metadata=bearer(tenant.admin_token),
    )
    found: dict[tuple[str, str], int] = {}
    for row in usage.rows:  # summed over hours: the calls may straddle one
        found[(row.metric, row.dimension)] = found.get((row.metric, row.dimension), 0) + row.value
    assert found == {
        ("embedding_tokens", model): expected,
        ("errors", "/hacs.embedding.v1.EmbeddingService/Embed"): 1,
    }


async def test_a_platform_service_embedding_for_a_tenant_is_counted_for_that_tenant(
    platform: Harness,
) -> None:
    """The header naming the tenant is believed from platform callers (the services' own
    actor, as search and RAG pods call the embedding pods) and ignored from anyone else."""
    from google.protobuf.timestamp_pb2 import Timestamp
    from hacs.tenant.v1 import tenant_service_pb2 as tpb

    from services.common.db.base import utcnow
    from services.common.usage_attribution import USAGE_TENANT_HEADER
    from services.tenant.api_keys import new_secret
    from services.tenant.bootstrap import ensure_service_actor
    from services.tenant.store import TenantStore

    assert platform.server.platform is not None
    service_key = new_secret("platform")[1]  # HACS_BOOTSTRAP_SERVICE_KEY, installed as at start
    await ensure_service_actor(TenantStore(platform.server.platform.db), service_key=service_key)
    model = "models/all-minilm-l6-v2"
    served = await platform.new_tenant()
    meddler = await platform.new_tenant()
    operator = await platform.operator_token()
    on_behalf = (
        *bearer(await platform.token(service_key)),
        (USAGE_TENANT_HEADER, served.tenant_id),
    )
    first = await stub(platform).Embed(
        pb.EmbedRequest(model=model, texts=["chest pain on exertion"]), metadata=on_behalf
    )
    spoofed = (*bearer(meddler.admin_token), (USAGE_TENANT_HEADER, served.tenant_id))
    second = await stub(platform).Embed(
        pb.EmbedRequest(model=model, texts=["shortness of breath at night"]), metadata=spoofed
    )
    now = int(utcnow().timestamp())

    async def tokens(tenant_name: str) -> int:
        usage = await platform.tenant.ExportUsage(
            tpb.ExportUsageRequest(
                parent=tenant_name,
                start_time=Timestamp(seconds=now - 3600),
                end_time=Timestamp(seconds=now + 1),
                metrics=["embedding_tokens"],
            ),
            metadata=bearer(operator),
        )
        return sum(r.value for r in usage.rows)

    assert await tokens(served.name) == first.embeddings[0].token_count
    assert await tokens(meddler.name) == second.embeddings[0].token_count
