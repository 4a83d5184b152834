"""Text -> vectors with transformers + torch, offline, on the GPU when there is one.

Tokens beyond the model's maximum are cut off (or refused, by policy) and
every result says how many tokens the text had, so truncation is never
silent. Inference runs in a worker thread (the callers' event loop never
blocks); torch uses the cores for one batch at a time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.common.settings import EMBEDDING_PRECISIONS
from services.kernel.embedding.model_config import ModelConfig, ModelLoadError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # (n, dimension) float32
    token_counts: list[int]  # tokens used (after truncation), special tokens included
    original_counts: list[int]  # tokens the text had
    truncated: list[bool]


class TextEncoder(Protocol):
    """What the micro-batcher and the registry need of a model: `Encoder` in this process,
    or `EncoderProcess` (encoder_process.py) in a child."""

    config: ModelConfig
    device: str
    dtype: str

    def encode(
        self, texts: list[str], *, max_length: int, normalize: bool, batch_size: int = 64
    ) -> Encoded: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def close(self) -> None: ...


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda") or requested == "auto":
        if torch.cuda.is_available():
            return "cuda" if requested == "auto" else requested
        if requested.startswith("cuda"):
            raise ModelLoadError(f"device {requested!r} asked for, but torch sees no CUDA GPU")
    return "cpu"


PRECISIONS = EMBEDDING_PRECISIONS


def pick_dtype(device: str, precision: str = "auto") -> str:
    """The arithmetic a model runs in: float16 on a GPU; on a CPU, bfloat16 where the CPU
    computes it natively (AVX-512 BF16 or AMX; vectors agree with float32 to a cosine of
    0.99998 on all-MiniLM-L6-v2, ~1.4x faster), else float32."""
    import torch

    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        return "float32" if precision == "float32" else "float16"
    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "bfloat16" and not native_bf16:
        raise ModelLoadError("bfloat16 asked for, but this CPU has no native bfloat16 arithmetic")
    return "bfloat16" if precision != "float32" and native_bf16 else "float32"


def pool(output: Any, attention_mask: Any, pooling: str) -> Any:
    """One vector per text from a transformer's last hidden states: [CLS], or the mean of tokens."""
    if pooling == "cls":
        return output[:, 0]
    mask = attention_mask.unsqueeze(-1).to(output.dtype)
    return (output * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class Encoder:
    def __init__(
        self,
        config: ModelConfig,
        device: str = "auto",
        precision: str = "auto",
        *,
        one_thread_below_tokens: int = 0,
    ) -> None:
        """`one_thread_below_tokens`: on a CPU, run batches of fewer padded tokens (rows x
        longest row) on one torch thread, larger ones on every core (0: leave torch's
        threads alone). A query batch is barely faster on two threads, and the second
        thread's spin-waits take a core from the rest of the machine."""
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.config = config
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, precision)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(config.path), local_files_only=True)
            model = AutoModel.from_pretrained(str(config.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the model in {config.path}: {exc}") from exc
        if self.dtype == "float16":
            model = model.half()
        # bfloat16 on the CPU: autocast (matrix products in bfloat16, norms and softmax in
        # float32). The linear layers' weights are stored in bfloat16 up front: autocast
        # would round them the same way on every forward pass (identical vectors, ~6 %
        # faster); the other weights stay float32.
        self._autocast = self.dtype == "bfloat16"
        if self._autocast:
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
        self._model = model.to(self.device).eval()
        self._torch = torch
        self._lock = threading.Lock()  # one batch at a time per model
        self._one_thread_below = one_thread_below_tokens if self.device == "cpu" else 0
        self._cores = torch.get_num_threads()

    @property
    def model(self) -> Any:
        """The loaded transformer: `hacs finetune` trains it in place (float32) and reads
        its vectors through `encode` between steps."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def close(self) -> None:
        """Nothing to release: the model goes with the last reference."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(
        self,
        texts: list[str],
        *,
        max_length: int,
        normalize: bool,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> Encoded:
        """Vectors for `texts`, longest-first in batches so padding stays small;
        `progress(done, total)` after each batch."""
        max_length = min(max_length or self.config.max_length, self.config.max_length)
        originals = self.count_tokens(texts)
        order = sorted(range(len(texts)), key=lambda i: -originals[i])
        vectors = np.zeros((len(texts), self.config.dimension), dtype=np.float32)
        torch = self._torch
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._autocast)
        with self._lock, torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(self.device)
                if self._one_thread_below:
                    small = batch["input_ids"].numel() < self._one_thread_below
                    torch.set_num_threads(1 if small else self._cores)
                output = self._model(**batch).last_hidden_state
                pooled = pool(output, batch["attention_mask"], self.config.pooling)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                vectors[chunk] = pooled.float().cpu().numpy()
                if progress is not None:
                    progress(start + len(chunk), len(texts))
        used = [min(n, max_length) for n in originals]
        return Encoded(vectors, used, originals, [n > max_length for n in originals])
