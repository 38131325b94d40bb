"""attach/detach, the exactness of the prefix term, and hot swap on tiny random models."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from aligner import AlignerConfig, AlreadyAttachedError, BaseModelMismatchError, attach, detach, get_adapter
from aligner.errors import NotAttachedError, UnsupportedModelError
from tests.aligner.conftest import random_token


def _inputs(vocab: int, B: int = 3, T: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :2] = 0  # left padding on one row
    return ids, mask


@torch.no_grad()
def _logits(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits


def test_zero_gates_equal_base(tiny) -> None:
    model, _, digests = tiny
    ids, mask = _inputs(model.config.vocab_size)
    base = _logits(model, ids, mask)
    adapter = attach(model, AlignerConfig(n_tokens=3, seed=0))
    assert adapter.active == "trainable"
    attached = _logits(model, ids, mask)
    assert (attached - base).abs().max().item() < 1e-6
    # And with a real token whose gates are zero.
    prefix, _ = random_token(digests.shape, 2, seed=1)
    adapter.set_token((prefix, torch.zeros(digests.shape.num_layers, digests.shape.num_heads)))
    assert (_logits(model, ids, mask) - base).abs().max().item() < 1e-6


def test_param_count_formula(tiny) -> None:
    model, _, digests = tiny
    s = digests.shape
    for n in (1, 4):
        adapter = attach(model, AlignerConfig(n_tokens=n))
        assert adapter.num_parameters() == n * s.hidden_size + s.num_layers * s.num_heads
        assert sum(p.numel() for p in adapter.parameters()) == adapter.num_parameters()
        detach(model)


def test_smollm2_shape_has_846_parameters() -> None:
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    adapter = attach(model, AlignerConfig(n_tokens=1))
    assert adapter.num_parameters() == 846


def test_one_prefix_shared_by_all_layers(tiny_llama) -> None:
    model, _, _ = tiny_llama
    adapter = attach(model)
    names = [n for n, _ in adapter.named_parameters()]
    assert names == ["prefix", "gates"]
    # The base model's state_dict is untouched: nothing of the adapter is saved with it.
    assert not any("prefix" in k or "gates" in k for k in model.state_dict())


def test_attach_twice_raises_and_detach_restores(tiny) -> None:
    model, _, digests = tiny
    ids, mask = _inputs(model.config.vocab_size)
    base = _logits(model, ids, mask)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    adapter = attach(model)
    assert all(not p.requires_grad for p in model.parameters())
    with pytest.raises(AlreadyAttachedError):
        attach(model)
    adapter.set_token(random_token(digests.shape, 1, seed=3))
    assert (_logits(model, ids, mask) - base).abs().max().item() > 1e-3
    detach(model)
    assert get_adapter(model) is None
    for layer in model.model.layers:
        assert "forward" not in layer.self_attn.__dict__
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(_logits(model, ids, mask), base)
    with pytest.raises(NotAttachedError):
        detach(model)
    attach(model)  # attachable again after detach


def test_unsupported_model_type() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="llama"):
        attach(model)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


@pytest.mark.parametrize("n", [1, 3])
def test_prefix_term_matches_the_paper_formula(tiny, n: int) -> None:
    """Layer 0's pre-o_proj input moves by exactly tanh(g) * softmax(Q K_p^T / sqrt(hd)) V_p."""
    model, _, digests = tiny
    s = digests.shape
    ids, mask = _inputs(model.config.vocab_size, B=2, T=5)
    attn = model.model.layers[0].self_attn
    seen: dict[str, torch.Tensor] = {}
    attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("pre", a[0]))
    attn.register_forward_pre_hook(
        lambda m, a, k: seen.update(h=k["hidden_states"], pe=k["position_embeddings"]), with_kwargs=True
    )
    adapter = attach(model)
    prefix, gates = random_token(s, n, seed=5)
    adapter.set_token(None)
    _logits(model, ids, mask)
    pre_base = seen["pre"]
    adapter.set_token((prefix, gates))
    _logits(model, ids, mask)
    pre_token, h, (cos, sin) = seen["pre"], seen["h"], seen["pe"]

    B, T, _ = h.shape
    hd, H, Hkv = s.head_dim, s.num_heads, s.num_kv_heads
    with torch.no_grad():
        q = attn.q_proj(h).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        q = q * cos[:, None] + _rotate_half(q) * sin[:, None]  # RoPE on the query only
        kp = attn.k_proj(prefix).view(n, Hkv, hd).transpose(0, 1)  # (Hkv, n, hd), bias included
        vp = attn.v_proj(prefix).view(n, Hkv, hd).transpose(0, 1)  # (Hkv, n, hd)
        kp = kp.repeat_interleave(H // Hkv, dim=0)  # (H, n, hd)
        vp = vp.repeat_interleave(H // Hkv, dim=0)  # (H, n, hd)
        a = torch.softmax(q @ kp.transpose(1, 2) / math.sqrt(hd), dim=-1) @ vp  # (B, H, T, hd)
        term = torch.tanh(gates[0])[None, :, None, None] * a  # (B, H, T, hd)
        expected = term.transpose(1, 2).reshape(B, T, H * hd)
    assert torch.allclose(pre_token - pre_base, expected, atol=1e-5)


def test_hot_swap_in_place(tiny) -> None:
    model, _, digests = tiny
    ids, mask = _inputs(model.config.vocab_size)
    adapter = attach(model)
    a, b = random_token(digests.shape, 1, seed=1), random_token(digests.shape, 3, seed=2)
    adapter.set_token(None)
    base = _logits(model, ids, mask)
    adapter.set_token(a)
    la = _logits(model, ids, mask)
    adapter.set_token(b)
    lb = _logits(model, ids, mask)
    assert (la - lb).abs().max() > 1e-3
    adapter.set_token(a)
    assert torch.equal(_logits(model, ids, mask), la)
    with adapter.disabled():
        assert torch.equal(_logits(model, ids, mask), base)
    assert torch.equal(_logits(model, ids, mask), la)
    # A fresh attach with the same token gives the same logits: the swap left nothing behind.
    detach(model)
    attach(model).set_token(b)
    assert torch.allclose(_logits(model, ids, mask), lb, atol=1e-6)


def test_cache_follows_in_place_updates(tiny_llama) -> None:
    model, _, _ = tiny_llama
    ids, mask = _inputs(model.config.vocab_size)
    adapter = attach(model, AlignerConfig(seed=0))
    before = _logits(model, ids, mask)
    with torch.no_grad():
        adapter.gates.fill_(0.5)  # what an optimizer step does
    after = _logits(model, ids, mask)
    assert (after - before).abs().max() > 1e-3
    adapter.set_token((adapter.prefix.detach().clone(), adapter.gates.detach().clone()))
    assert torch.allclose(_logits(model, ids, mask), after, atol=1e-6)


def test_wrong_shapes_and_digest_refused(tiny_llama) -> None:
    model, _, digests = tiny_llama
    s = digests.shape
    adapter = attach(model, base_digest=digests.weights)
    with pytest.raises(BaseModelMismatchError, match="prefix"):
        adapter.set_token((torch.zeros(1, s.hidden_size + 1), torch.zeros(s.num_layers, s.num_heads)))
    with pytest.raises(BaseModelMismatchError, match="gates"):
        adapter.set_token((torch.zeros(1, s.hidden_size), torch.zeros(s.num_layers + 1, s.num_heads)))


def test_bf16_model(tiny_llama) -> None:
    model, _, digests = tiny_llama
    model = model.to(torch.bfloat16)
    ids, mask = _inputs(model.config.vocab_size)
    base = _logits(model, ids, mask)
    adapter = attach(model)
    assert adapter.prefix.dtype == torch.bfloat16
    assert torch.equal(_logits(model, ids, mask), base)
    adapter.set_token(random_token(digests.shape, 2, seed=4))  # fp32 token onto a bf16 model
    out = _logits(model, ids, mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
