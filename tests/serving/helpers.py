"""Helpers for the serving tests: tiny models with an adapter attached, token artifacts."""

from __future__ import annotations

import copy
from typing import Any

import torch


def attached_copy(loaded: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """A private copy of the tiny model with an Aligner adapter (one per engine: adapters are per model)."""
    from aligner import attach

    model, tokenizer, digests = loaded
    mine = copy.deepcopy(model)
    adapter = attach(mine, base_digest=digests.weights)
    adapter.set_token(None)
    return mine, tokenizer, digests


def make_token(digests: Any, seed: int, *, n_tokens: int = 2, gate: float = 2.0, base_digest: str | None = None) -> Any:
    """A token that visibly changes the tiny model's output (large gates), bound to `digests`."""
    from aligner.artifact import AlignerToken

    g = torch.Generator().manual_seed(seed)
    shape = digests.shape
    prefix = torch.randn(n_tokens, shape.hidden_size, generator=g) * 3.0
    gates = torch.full((shape.num_layers, shape.num_heads), gate) + torch.randn(
        shape.num_layers, shape.num_heads, generator=g
    )
    return AlignerToken.create(
        prefix,
        gates,
        base_model=digests.name,
        base_model_digest=base_digest or digests.weights,
        tokenizer_digest=digests.tokenizer,
        training_method="manual",
        seed=seed,
    )
