"""The model in a child process (HACS_EMBEDDING_WORKER=process): same vectors as in the
service's own process, clear errors when the model cannot load or the child dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.encoder_process import EncoderProcess, EncoderProcessDied
from services.kernel.embedding.model_config import (
    ModelConfig,
    ModelLoadError,
    read_model_config,
    shipped_model_path,
)

TEXTS = [
    "Hemoglobin A1c 8.2 %",
    "elderly patients with diabetes and high blood pressure",
    "word " * 400,  # truncated at 256 tokens
]


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return read_model_config("models/all-minilm-l6-v2", shipped_model_path())


@pytest.fixture(scope="module")
def child(config: ModelConfig) -> EncoderProcess:
    encoder = EncoderProcess(config, "cpu")
    yield encoder
    encoder.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_child_embeds_as_the_service_process_does(
    config: ModelConfig, child: EncoderProcess
) -> None:
    local = Encoder(config, "cpu")
    assert (child.device, child.dtype) == (local.device, local.dtype)
    for texts in (TEXTS[:1], TEXTS):  # a query alone (one thread) and a mixed batch
        remote, here = (e.encode(texts, max_length=256, normalize=True) for e in (child, local))
        cosines = np.sum(remote.vectors * here.vectors, axis=1)
        assert np.all(cosines > 0.9999), cosines
        assert remote.truncated == here.truncated
        assert remote.original_counts == here.original_counts
    assert child.count_tokens(["hello world"]) == local.count_tokens(["hello world"]) == [4]


def test_a_killed_child_fails_that_call_clearly_and_the_next_call_starts_another(
    child: EncoderProcess,
) -> None:
    first = child.pid
    assert first is not None and _alive(first)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(EncoderProcessDied, match=r"ended .*exit code -9.*next request starts"):
        child.encode(["chest pain"], max_length=256, normalize=True)
    vectors = child.encode(["chest pain"], max_length=256, normalize=True).vectors
    assert vectors.shape == (1, 384) and child.pid not in (None, first)


def test_close_ends_the_child(config: ModelConfig) -> None:
    encoder = EncoderProcess(config, "cpu")
    pid = encoder.pid
    assert pid is not None and _alive(pid)
    encoder.close()
    assert encoder.pid is None and not _alive(pid)


def test_a_model_that_cannot_load_names_its_path(tmp_path: Path, config: ModelConfig) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((config.path / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=str(broken)):
        EncoderProcess(ModelConfig(**{**config.__dict__, "path": broken}), "cpu")


def test_the_child_imports_the_platform_from_where_the_parent_does() -> None:
    # Not from the directory above this module's (services/kernel/embedding -> services):
    # moving the module into the kernel once pointed the child's PYTHONPATH there.
    from services.kernel.embedding.encoder_process import package_root

    assert (package_root() / "services" / "kernel" / "embedding" / "encoder_process.py").is_file()
