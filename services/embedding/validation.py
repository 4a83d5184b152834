"""Validators for every EmbeddingService request (registered on import)."""

from __future__ import annotations

import re

from hacs.embedding.v1 import embedding_service_pb2 as pb
from hacs.embedding.v1 import model_pb2

from services.common.validation import Violations, validates
from services.embedding.service import MAX_TEXT_CHARS, MAX_TEXTS

MODEL_NAME = re.compile(r"^models/[a-z0-9][a-z0-9.-]{0,62}\Z")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
MAX_PASSAGES = 1000


def _model(v: Violations, field: str, name: str, *, required: bool = False) -> None:
    if (name or required) and not MODEL_NAME.match(name):
        v.add(field, f"{name!r} is not a model name like 'models/all-minilm-l6-v2'")


def _texts(v: Violations, field: str, texts: list[str], limit: int) -> None:
    if not 1 <= len(texts) <= limit:
        v.add(field, f"send between 1 and {limit} texts (got {len(texts)})")
    for i, text in enumerate(texts):
        if not text.strip():
            v.add(f"{field}[{i}]", "is empty")
        elif len(text) > MAX_TEXT_CHARS:
            v.add(f"{field}[{i}]", f"is longer than {MAX_TEXT_CHARS} characters")


def _options(v: Violations, options: pb.EmbedOptions) -> None:
    if options.max_length < 0:
        v.add("options.max_length", "must not be negative (0 = the model's maximum)")


@validates(pb.EmbedRequest)
def _embed(r: pb.EmbedRequest, v: Violations) -> None:
    _model(v, "model", r.model)
    _texts(v, "texts", list(r.texts), MAX_TEXTS)
    _options(v, r.options)


@validates(pb.EmbedStreamRequest)
def _embed_stream(r: pb.EmbedStreamRequest, v: Violations) -> None:
    payload = r.WhichOneof("payload")
    if payload is None:
        v.add("payload", "send `config` first, then `texts`")
    elif payload == "config":
        _model(v, "config.model", r.config.model)
        _options(v, r.config.options)
    else:
        _texts(v, "texts.items", [i.text for i in r.texts.items], MAX_TEXTS)
        ids = [i.id for i in r.texts.items]
        if len(set(ids)) != len(ids):
            v.add("texts.items", "item ids must be unique")


@validates(pb.RerankRequest)
def _rerank(r: pb.RerankRequest, v: Violations) -> None:
    _model(v, "model", r.model)
    v.required("query", r.query.strip())
    _texts(v, "passages", list(r.passages), MAX_PASSAGES)


@validates(pb.ListModelsRequest)
def _list(r: pb.ListModelsRequest, v: Violations) -> None:
    v.page(r.page_size)


@validates(pb.GetModelRequest)
def _get(r: pb.GetModelRequest, v: Violations) -> None:
    _model(v, "name", r.name, required=True)


@validates(pb.RegisterModelRequest)
def _register(r: pb.RegisterModelRequest, v: Violations) -> None:
    if not MODEL_ID.match(r.model_id):
        v.add("model_id", "1-63 lower-case letters, digits and '-'")
    if r.WhichOneof("source") is None:
        v.add("source", "give local_path (a model directory) or hf_name (from the local cache)")
    if r.model.kind not in (0, model_pb2.MODEL_KIND_EMBEDDING, model_pb2.MODEL_KIND_RERANKER):
        v.add("model.kind", "unknown kind")
    if r.model.max_length < 0:
        v.add("model.max_length", "must not be negative")


@validates(pb.DeleteModelRequest)
def _delete(r: pb.DeleteModelRequest, v: Violations) -> None:
    _model(v, "name", r.name, required=True)
