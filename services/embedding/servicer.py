"""gRPC glue for hacs.embedding.v1.EmbeddingService."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
from hacs.embedding.v1 import embedding_service_pb2 as pb
from hacs.embedding.v1 import embedding_service_pb2_grpc as pb_grpc

from services.common.caller import current_caller
from services.common.errors import FieldViolation, Invalid
from services.common.pagination import decode_page_token, page_size, take_page
from services.common.runtime.context import ServicerContext
from services.embedding import validation  # noqa: F401  (registers the request validators)
from services.embedding.convert import KIND_NAMES, POOLING_NAMES, model_to_proto
from services.embedding.service import EmbeddingDomain, EmbedOptions, EmbedResult


def _options(options: pb.EmbedOptions) -> EmbedOptions:
    return EmbedOptions(
        normalize=options.normalize if options.HasField("normalize") else None,
        reject_truncation=options.truncation == pb.TRUNCATION_POLICY_REJECT,
        query=options.input_type == pb.INPUT_TYPE_QUERY,
        max_length=options.max_length,
    )


def _embeddings(result: EmbedResult) -> list[pb.Embedding]:
    encoded = result.encoded
    return [
        pb.Embedding(
            values=encoded.vectors[i].tolist(),
            token_count=encoded.token_counts[i],
            original_token_count=encoded.original_counts[i],
            truncated=encoded.truncated[i],
        )
        for i in range(len(encoded.token_counts))
    ]


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, domain: EmbeddingDomain) -> None:
        self._domain = domain

    async def Embed(self, request: pb.EmbedRequest, context: ServicerContext) -> pb.EmbedResponse:
        result = await self._domain.embed(
            current_caller(), request.model, list(request.texts), _options(request.options)
        )
        embeddings = _embeddings(result)
        return pb.EmbedResponse(
            model=result.entry.config.name,
            dimension=result.entry.config.dimension,
            embeddings=embeddings,
            device=result.entry.device,
            total_tokens=sum(result.encoded.token_counts),
            truncated_count=sum(result.encoded.truncated),
            normalized=result.normalized,
        )

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedStreamRequest], context: ServicerContext
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        caller = current_caller()
        config: pb.EmbedStreamConfig | None = None
        async for message in request_iterator:
            if message.HasField("config"):
                if config is not None:
                    raise Invalid(FieldViolation("config", "send the config once, first"))
                config = message.config
                continue
            if config is None:
                raise Invalid(
                    FieldViolation("config", "the first message of a stream must be its config")
                )
            items = list(message.texts.items)
            result = await self._domain.embed(
                caller, config.model, [i.text for i in items], _options(config.options)
            )
            yield pb.EmbedStreamResponse(
                model=result.entry.config.name,
                dimension=result.entry.config.dimension,
                items=[
                    pb.EmbeddedItem(id=item.id, embedding=embedding)
                    for item, embedding in zip(items, _embeddings(result), strict=True)
                ],
            )

    async def Rerank(
        self, request: pb.RerankRequest, context: ServicerContext
    ) -> pb.RerankResponse:
        entry, scores, truncated = await self._domain.rerank(
            current_caller(), request.model, request.query, list(request.passages)
        )
        probabilities = 1.0 / (1.0 + np.exp(-scores))
        return pb.RerankResponse(
            model=entry.config.name,
            device=entry.device,
            results=[
                pb.RerankResult(score=float(s), probability=float(p), truncated=t)
                for s, p, t in zip(scores, probabilities, truncated, strict=True)
            ],
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: ServicerContext
    ) -> pb.ListModelsResponse:
        current_caller().require("read:embedding", "models")
        entries = [
            e
            for e in self._domain.registry.entries()
            if not request.kind or e.config.kind == KIND_NAMES[request.kind]
        ]
        if request.page_token:
            after = decode_page_token("models", request.page_token)
            entries = [e for e in entries if e.config.name > after]
        page, token = take_page(
            entries, page_size(request.page_size), "models", lambda e: e.config.name
        )
        return pb.ListModelsResponse(
            models=[model_to_proto(e) for e in page], next_page_token=token
        )

    async def GetModel(
        self, request: pb.GetModelRequest, context: ServicerContext
    ) -> pb.GetModelResponse:
        current_caller().require("read:embedding", request.name)
        return pb.GetModelResponse(model=model_to_proto(self._domain.registry.get(request.name)))

    async def RegisterModel(
        self, request: pb.RegisterModelRequest, context: ServicerContext
    ) -> pb.RegisterModelResponse:
        current_caller().require_platform_operator()
        wanted = request.model
        overrides: dict[str, object] = {
            "pooling": POOLING_NAMES.get(wanted.pooling),
            "max_length": wanted.max_length,
            "query_prefix": wanted.query_prefix,
            "document_prefix": wanted.document_prefix,
            "display_name": wanted.display_name,
            "normalize": wanted.normalize if wanted.HasField("normalize") else None,
        }
        entry = await self._domain.registry.register(
            request.model_id,
            local_path=request.local_path,
            hf_name=request.hf_name,
            kind=KIND_NAMES.get(wanted.kind, "embedding"),
            overrides=overrides,
            set_default=request.set_default,
            validate_only=request.validate_only,
        )
        return pb.RegisterModelResponse(model=model_to_proto(entry))

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: ServicerContext
    ) -> pb.DeleteModelResponse:
        current_caller().require_platform_operator()
        entry = await self._domain.registry.delete(request.name)
        return pb.DeleteModelResponse(model=model_to_proto(entry))
