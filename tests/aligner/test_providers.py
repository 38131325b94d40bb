"""Base model providers (offline) and, marked slow, the real SmolLM2 model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aligner import AlignerConfig, ModelNotFoundError, attach
from aligner.providers import load_base_model, weights_digest


def test_tiny_models_are_deterministic(state_dir) -> None:
    a, tok, da = load_base_model("tiny-random-qwen2", state_dir=state_dir)
    b, _, db = load_base_model("tiny-random-qwen2", state_dir=state_dir)
    assert da.weights == db.weights == weights_digest(b)
    assert da.shape.model_type == "qwen2" and da.shape.num_kv_heads == 2
    assert a.model.layers[0].self_attn.k_proj.bias is not None
    assert tok.padding_side == "left" and tok.pad_token is not None
    _, _, dl = load_base_model("tiny-random-llama", state_dir=state_dir)
    assert dl.weights != da.weights and dl.tokenizer == da.tokenizer


def test_digest_depends_on_dtype_and_values(state_dir) -> None:
    model, _, d = load_base_model("tiny-random-llama", state_dir=state_dir)
    assert weights_digest(model.to(torch.bfloat16)) != d.weights
    model, _, d = load_base_model("tiny-random-llama", state_dir=state_dir)
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    assert weights_digest(model) != d.weights


def test_local_directory_and_unknown_names(state_dir, tmp_path) -> None:
    model, tokenizer, d = load_base_model("tiny-random-llama", state_dir=state_dir)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    _, _, local = load_base_model(str(tmp_path / "m"), state_dir=state_dir)
    assert local.weights == d.weights and local.tokenizer == d.tokenizer
    with pytest.raises(ModelNotFoundError, match="no hub downloads"):
        load_base_model("meta-llama/Llama-2-7b", state_dir=state_dir)


@pytest.mark.slow
def test_smollm2_cache_dtypes_and_846_parameters(state_dir) -> None:
    model, _, d = load_base_model("smollm2-135m-instruct", state_dir=state_dir, dtype="float32")
    assert (d.shape.hidden_size, d.shape.num_layers, d.shape.num_heads) == (576, 30, 9)
    assert d.weights == weights_digest(model)  # the cached digest is the one of the weights as loaded
    assert (state_dir / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    adapter = attach(model, AlignerConfig(n_tokens=1))
    assert adapter.num_parameters() == 846
    bf16, _, d16 = load_base_model("smollm2-135m-instruct", state_dir=state_dir, dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert d16.weights == weights_digest(bf16) != d.weights
    assert d16.tokenizer == d.tokenizer


@pytest.mark.slow
def test_smollm2_per_row_generation_matches_alone(state_dir) -> None:
    from aligner.generation import generate

    torch.manual_seed(0)
    model, tokenizer, d = load_base_model("smollm2-135m-instruct", state_dir=state_dir)
    adapter = attach(model, base_digest=d.weights)
    g = torch.Generator().manual_seed(0)
    tok = (torch.randn(3, 576, generator=g), torch.randn(30, 9, generator=g) * 0.3)
    prompts = ["What is the capital of France?", "Name a primary color.", "Say hello in Spanish."]
    rows = [tok, None, tok]
    mixed = generate(model, tokenizer, prompts, row_tokens=rows, max_new_tokens=12)
    alone = [
        generate(model, tokenizer, [p], row_tokens=[r], max_new_tokens=12)[0]
        for p, r in zip(prompts, rows, strict=True)
    ]
    assert mixed == alone
    assert adapter.active == "trainable"


def test_a_cache_built_by_two_processes_at_once_is_published_once(tmp_path: Path) -> None:
    from aligner.providers import _publish

    cache = tmp_path / "models" / "m"
    cache.parent.mkdir()
    first, second = tmp_path / "models" / ".a", tmp_path / "models" / ".b"
    for d in (first, second):
        d.mkdir()
        (d / "done.json").write_text(d.name)
    assert _publish(first, cache, complete="done.json") is True
    assert _publish(second, cache, complete="done.json") is False  # the loser keeps the winner's cache
    assert (cache / "done.json").read_text() == ".a" and not second.exists()
    third = tmp_path / "models" / ".c"
    third.mkdir()
    (cache / "done.json").rename(cache / "partial")  # a target that is not a complete cache: an error
    with pytest.raises(OSError):
        _publish(third, cache, complete="done.json")
