"""The wrapped attention: a Llama-family attention forward plus Aligner's prefix term.

`aligner_attention_forward` is the forward of transformers' LlamaAttention (Mistral and
Qwen2 have the same shape) with one line added before `o_proj`:

    out = attention(Q, K, V) + tanh(g_l) * softmax(Q K_p^T / sqrt(head_dim)) V_p

K_p and V_p come from the global prefix P through this layer's own frozen k_proj and
v_proj (biases included where the model has them, as for Qwen2), with no rotary
embedding, and are repeated per group for grouped-query attention. Q is the layer's
query after its rotary embedding, as in LLaMA-Adapter on which the paper builds.
Patching the instance's `forward` (instead of replacing the module) keeps the module
tree and state_dict of the base model untouched, so its digest and save_pretrained do
not change while a token is attached. The code follows transformers 5.x; a move in
that API touches this file only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

if TYPE_CHECKING:
    from aligner.model import AlignerAdapter

# model_type -> how that family passes sliding_window to the attention function.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def project_prefix(attn: Any, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K_p, V_p of one layer for prefix (Bp, n, d): each (Bp, H, n, head_dim), GQA repeated."""
    Bp, n, _ = prefix.shape
    head_dim: int = attn.head_dim
    groups: int = attn.num_key_value_groups
    x = prefix.to(attn.k_proj.weight.dtype)
    k = attn.k_proj(x).view(Bp, n, -1, head_dim).transpose(1, 2)  # (Bp, Hkv, n, hd)
    v = attn.v_proj(x).view(Bp, n, -1, head_dim).transpose(1, 2)  # (Bp, Hkv, n, hd)
    Hkv = k.shape[1]
    # Head h reads kv head h // groups, the same layout as transformers' repeat_kv.
    k = k[:, :, None].expand(Bp, Hkv, groups, n, head_dim).reshape(Bp, Hkv * groups, n, head_dim)  # (Bp, H, n, hd)
    v = v[:, :, None].expand(Bp, Hkv, groups, n, head_dim).reshape(Bp, Hkv * groups, n, head_dim)  # (Bp, H, n, hd)
    return k, v


def prefix_attention(
    query: torch.Tensor, k_scaled: torch.Tensor, v_gated: torch.Tensor, mask_bias: torch.Tensor | None
) -> torch.Tensor:
    """tanh(g) * softmax(Q K_p^T / sqrt(hd)) V_p, returned as (B, T, H, hd) to add to the attention output.

    query (B, H, T, hd); k_scaled = K_p * scaling and v_gated = tanh(g) * V_p, both (Bp, H, n, hd)
    with Bp in {1, B}; mask_bias (Bp, 1, 1, n) with -inf on padded prefix slots, or None.
    """
    if k_scaled.shape[2] == 1 and mask_bias is None:
        # A softmax over a single key is exactly 1: the term is V_p itself, whatever Q is.
        return v_gated.transpose(1, 2)  # (Bp, 1, H, hd), broadcast over T
    B = query.shape[0]
    if k_scaled.shape[0] != B:
        # A token shared by the batch (Bp = 1) is materialised per row: a matmul against a
        # broadcast operand may fold the batch into one larger GEMM whose rounding differs
        # (1e-7 on some CPUs) from the per-row matmuls of `set_row_tokens`, and a row's numbers
        # must not depend on whether its neighbours carry the same token or another one.
        k_scaled = k_scaled.expand(B, -1, -1, -1).contiguous()
        v_gated = v_gated.expand(B, -1, -1, -1).contiguous()
    scores = torch.matmul(query, k_scaled.transpose(2, 3))  # (B, H, T, n)
    if mask_bias is not None:
        scores = scores + mask_bias  # (B, H, T, n)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, H, T, n)
    return torch.matmul(weights, v_gated).transpose(1, 2)  # (B, T, H, hd)


def make_forward(adapter: AlignerAdapter, layer_index: int, attn: Any) -> Callable[..., Any]:
    """Build the patched forward for one attention module (bound to it by the caller)."""
    family = sys.modules[type(attn).__module__]
    apply_rotary_pos_emb = family.apply_rotary_pos_emb
    eager_attention_forward = family.eager_attention_forward
    model_type = attn.config.model_type
    if model_type == "qwen2":
        extra: dict[str, Any] = {"sliding_window": getattr(attn, "sliding_window", None)}
    elif model_type == "mistral":
        extra = {"sliding_window": getattr(attn.config, "sliding_window", None)}
    else:
        extra = {}

    def forward(
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self = attn
        if cache is None:
            cache = past_key_values
        input_shape = hidden_states.shape[:-1]  # (B, T)
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, hd)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, T, hd)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, T, hd)

        assert position_embeddings is not None, "Llama-family layers always receive position_embeddings"
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable[..., Any] = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **extra,
            **kwargs,
        )  # attn_output (B, T, H, hd)

        term = adapter.prefix_term(layer_index, self, query_states)  # (B or 1, T or 1, H, hd) | None
        if term is not None:
            if torch.is_grad_enabled():
                attn_output = attn_output + term  # (B, T, H, hd)
            else:
                attn_output.add_(term)  # (B, T, H, hd); in place saves an allocation per layer and step

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, H*hd)
        attn_output = self.o_proj(attn_output)  # (B, T, d)
        return attn_output, attn_weights

    return forward
