"""Registry entries -> hacs.embedding.v1.Model."""

from __future__ import annotations

from hacs.embedding.v1 import model_pb2

from services.kernel.embedding.registry import ModelEntry

KINDS = {"embedding": model_pb2.MODEL_KIND_EMBEDDING, "reranker": model_pb2.MODEL_KIND_RERANKER}
KIND_NAMES = {v: k for k, v in KINDS.items()}
POOLINGS = {"mean": model_pb2.POOLING_MEAN, "cls": model_pb2.POOLING_CLS}
POOLING_NAMES = {v: k for k, v in POOLINGS.items()}
STATES = {
    "ready_to_load": model_pb2.MODEL_STATE_READY,
    "loading": model_pb2.MODEL_STATE_LOADING,
    "ready": model_pb2.MODEL_STATE_READY,
    "failed": model_pb2.MODEL_STATE_FAILED,
}


def model_to_proto(entry: ModelEntry) -> model_pb2.Model:
    config = entry.config
    model = model_pb2.Model(
        name=config.name,
        display_name=config.display_name or config.name.removeprefix("models/"),
        kind=KINDS[config.kind],
        source=entry.source,
        architecture=config.architecture,
        dimension=config.dimension,
        pooling=POOLINGS[config.pooling],
        max_length=config.max_length,
        normalize=config.normalize,
        query_prefix=config.query_prefix,
        document_prefix=config.document_prefix,
        device=entry.device,
        dtype=entry.dtype,
        state=STATES[entry.state],
        error=entry.error,
        is_default=entry.is_default,
    )
    if entry.create_time is not None:
        model.create_time.FromDatetime(entry.create_time)
    return model
