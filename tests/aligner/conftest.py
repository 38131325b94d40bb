"""Fixtures for the aligner tests: tiny random Llama/Qwen2 models and small tokens.

The SmolLM2 tokenizer (and, for slow tests, the model) is cached in the repo's
gitignored state folder, so only the first run pays for reading the GGUF file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from aligner.providers import load_base_model

STATE_DIR = Path(os.environ.get("ALIGNER_TEST_STATE_DIR", Path(__file__).resolve().parents[2] / "state"))


@pytest.fixture(scope="session")
def state_dir() -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return STATE_DIR


@pytest.fixture(params=["tiny-random-llama", "tiny-random-qwen2"])
def tiny(request: pytest.FixtureRequest, state_dir: Path) -> tuple[Any, Any, Any]:
    torch.set_num_threads(1)
    return load_base_model(request.param, state_dir=state_dir, dtype="float32")


@pytest.fixture
def tiny_llama(state_dir: Path) -> tuple[Any, Any, Any]:
    torch.set_num_threads(1)
    return load_base_model("tiny-random-llama", state_dir=state_dir, dtype="float32")


def random_token(shape: Any, n: int, seed: int, gate_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A token with non-zero gates, so that it visibly changes the model's outputs."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(n, shape.hidden_size, generator=g)
    gates = torch.randn(shape.num_layers, shape.num_heads, generator=g) * gate_scale
    return prefix, gates
