"""The shipped model through the encoder and the micro-batcher (real weights, CPU)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.kernel.embedding.batcher import MicroBatcher
from services.kernel.embedding.encoder import Encoder, pick_dtype
from services.kernel.embedding.model_config import (
    ModelLoadError,
    read_model_config,
    shipped_model_path,
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(read_model_config("models/all-minilm-l6-v2", shipped_model_path()), device="cpu")


def test_shipped_model_config_is_read_from_its_files() -> None:
    config = read_model_config("models/x", shipped_model_path())
    assert (config.dimension, config.pooling, config.max_length, config.normalize) == (
        384,
        "mean",
        256,
        True,
    )


def test_embeddings_are_deterministic_and_unit_length(encoder: Encoder) -> None:
    texts = ["Hemoglobin A1c 8.2 %", "Patient reports chest pain on exertion"]
    first = encoder.encode(texts, max_length=256, normalize=True)
    second = encoder.encode(list(reversed(texts)), max_length=256, normalize=True)
    assert first.vectors.shape == (2, 384)
    np.testing.assert_allclose(first.vectors, second.vectors[::-1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)


def test_similar_clinical_sentences_score_higher_than_unrelated_ones(encoder: Encoder) -> None:
    a, b, c = encoder.encode(
        [
            "The patient has high blood pressure.",
            "Hypertension was diagnosed in this patient.",
            "The cafeteria serves lunch at noon.",
        ],
        max_length=256,
        normalize=True,
    ).vectors
    assert float(a @ b) > float(a @ c) + 0.3


def test_truncation_is_reported_not_silent(encoder: Encoder) -> None:
    long = "word " * 600
    result = encoder.encode(["short text", long], max_length=128, normalize=True)
    assert result.truncated == [False, True]
    assert result.token_counts[1] == 128 and result.original_counts[1] > 600


async def test_concurrent_requests_share_forward_passes(encoder: Encoder) -> None:
    batcher = MicroBatcher(encoder, max_batch=64, max_wait_seconds=0.05)
    texts = [f"observation number {i}" for i in range(20)]
    results = await asyncio.gather(
        *(batcher.embed([t], max_length=256, normalize=True) for t in texts)
    )
    await batcher.close()
    assert batcher.batches_run < len(texts)  # grouped, not one pass per request
    alone = encoder.encode(texts, max_length=256, normalize=True).vectors
    np.testing.assert_allclose(np.vstack([r.vectors for r in results]), alone, atol=1e-5)


def test_a_model_directory_with_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "biobert"
    shutil.copytree(shipped_model_path(), broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights: expected one of model\.safetensors"):
        read_model_config("models/biobert", broken)
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        read_model_config("models/biobert", broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_model_config("models/none", tmp_path / "nowhere")


def test_a_cls_pooled_model_is_read_as_such(tmp_path: Path) -> None:
    clinical = tmp_path / "clinical-bert"
    shutil.copytree(shipped_model_path(), clinical)
    pooling = clinical / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    assert read_model_config("models/clinical-bert", clinical).pooling == "cls"


def test_precision_is_chosen_for_the_device_and_checked() -> None:
    import torch

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert pick_dtype("cuda", "auto") == "float16"
    assert pick_dtype("cuda", "float32") == "float32"
    assert pick_dtype("cpu", "float32") == "float32"
    assert pick_dtype("cpu", "auto") == ("bfloat16" if native else "float32")
    with pytest.raises(ModelLoadError, match="not one of auto, float32, bfloat16"):
        pick_dtype("cpu", "int8")
    if not native:
        with pytest.raises(ModelLoadError, match="no native bfloat16"):
            pick_dtype("cpu", "bfloat16")


def test_bfloat16_vectors_agree_with_float32(encoder: Encoder) -> None:
    if encoder.dtype != "bfloat16":
        pytest.skip("this CPU has no native bfloat16: the encoder runs in float32")
    exact = Encoder(
        read_model_config("models/all-minilm-l6-v2", shipped_model_path()), "cpu", "float32"
    )
    texts = [
        "Hemoglobin A1c 8.2 % above target",
        "elderly patients with diabetes and high blood pressure",
        "Signs include wheezing, shortness of breath and chest tightness at night. " * 8,
    ]
    fast = encoder.encode(texts, max_length=256, normalize=True).vectors
    slow = exact.encode(texts, max_length=256, normalize=True).vectors
    assert exact.dtype == "float32"
    assert float(np.min(np.sum(fast * slow, axis=1))) > 0.999
