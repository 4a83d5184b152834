"""Cross-encoder re-ranking: a (query, passage) pair -> a relevance logit.

Any local sequence-classification model with one output (e.g. an MS MARCO
MiniLM cross-encoder, MedCPT's cross-encoder) registered with kind
"reranker". None ships with HACS; without one, Rerank says so.
"""

from __future__ import annotations

import threading

import numpy as np

from services.kernel.embedding.encoder import pick_device
from services.kernel.embedding.model_config import ModelConfig, ModelLoadError


class CrossEncoder:
    def __init__(self, config: ModelConfig, device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.config = config
        self.device = pick_device(device)
        self.dtype = "float16" if self.device.startswith("cuda") else "float32"
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(config.path), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(config.path), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the re-ranker in {config.path}: {exc}") from exc
        if model.config.num_labels != 1:
            raise ModelLoadError(
                f"{config.path} has {model.config.num_labels} outputs; a re-ranker has one"
            )
        self._model = (
            (model.half() if self.device.startswith("cuda") else model).to(self.device).eval()
        )
        self._torch = torch
        self._lock = threading.Lock()

    def score(
        self, query: str, passages: list[str], batch_size: int = 32
    ) -> tuple[np.ndarray, list[bool]]:
        """Logits, one per passage, and whether each pair was truncated."""
        max_length = self.config.max_length
        lengths = [
            len(ids)
            for ids in self._tokenizer([query] * len(passages), passages, truncation=False)[
                "input_ids"
            ]
        ]
        scores = np.zeros(len(passages), dtype=np.float32)
        torch = self._torch
        with self._lock, torch.inference_mode():
            for start in range(0, len(passages), batch_size):
                chunk = passages[start : start + batch_size]
                batch = self._tokenizer(
                    [query] * len(chunk),
                    chunk,
                    padding=True,
                    truncation="only_second",
                    max_length=max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self._model(**batch).logits.squeeze(-1)
                scores[start : start + len(chunk)] = logits.float().cpu().numpy()
        return scores, [n > max_length for n in lengths]
