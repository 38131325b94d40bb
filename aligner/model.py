"""Attach an Aligner adapter to a transformers Llama-family causal LM, swap tokens, detach.

`attach(model, config)` freezes the base model, patches every attention layer (see
`aligner.layer`) and returns the `AlignerAdapter`. The adapter owns the trainable token
(one global prefix `P` of shape (n, d) shared by all layers, and gates `g` of shape
(L, H)) and the *active* token the layers read. The active token is a reference, so
switching versions is a pointer swap: `set_token(token)` for the whole batch,
`set_token(None)` for the bare base model, `set_row_tokens([...])` for one token (or
none) per batch row; a row's numbers are then bit for bit those of its token set for the
whole batch (each distinct token is projected alone), whatever its neighbours hold.
Projections K_p, V_p are computed lazily on the first forward after a swap and reused
while no gradient flows, so a resident version costs only its n*d + L*H numbers.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from aligner.config import AlignerConfig
from aligner.errors import (
    AlreadyAttachedError,
    BaseModelMismatchError,
    InvalidTokenError,
    NotAttachedError,
    UnsupportedModelError,
)
from aligner.layer import SUPPORTED_MODEL_TYPES, make_forward, prefix_attention, project_prefix

_ADAPTER_ATTR = "_aligner_adapter"
_serials = itertools.count(1)


class TokenLike(Protocol):
    """Anything carrying a prefix (n, d) and gates (L, H): an AlignerToken, or the adapter's export."""

    prefix: torch.Tensor
    gates: torch.Tensor


Token = TokenLike | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelShape:
    """The numbers a token must agree with; readable from a config without loading weights."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    model_type: str

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            hidden_size=int(config.hidden_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            model_type=str(config.model_type),
        )

    def param_count(self, n_tokens: int) -> int:
        return n_tokens * self.hidden_size + self.num_layers * self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Active:
    prefix: torch.Tensor  # (n, d) shared by all rows, or (B, n, d) per row
    gates: torch.Tensor  # (L, H) or (B, L, H)
    mask_bias: torch.Tensor | None  # (B, 1, 1, n): -inf on padded prefix slots, or None
    rows: int | None  # batch size the per-row tensors were built for; None = shared
    serial: int = 0  # unique per state; keys the projection cache (ids of freed objects get reused)
    # per-row states: the rows holding each distinct token, and that token's n_tokens
    groups: tuple[tuple[tuple[int, ...], int], ...] = ()


def _unpack(token: Token) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(token, tuple):
        return token
    return token.prefix, token.gates


class AlignerAdapter(nn.Module):
    """The trainable token plus the active-token slot every patched layer reads."""

    def __init__(self, model: nn.Module, config: AlignerConfig, attentions: list[nn.Module]) -> None:
        super().__init__()
        self.config = config
        self.shape = ModelShape.from_config(model.config)
        weight = next(model.parameters())
        self.model_dtype = weight.dtype
        self.device = weight.device
        self.base_digest: str | None = None
        dtype = config.torch_dtype(self.model_dtype)
        generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        prefix = torch.randn(config.n_tokens, self.shape.hidden_size, generator=generator) * config.init_std
        self.prefix = nn.Parameter(prefix.to(device=self.device, dtype=dtype))  # (n, d)
        gates = torch.full((self.shape.num_layers, self.shape.num_heads), float(config.gate_init))
        self.gates = nn.Parameter(gates.to(device=self.device, dtype=dtype))  # (L, H)
        # Plain attributes, not submodules: the adapter must not own (or save) base weights.
        self.__dict__["_attentions"] = attentions
        self._active: _Active | None = _Active(self.prefix, self.gates, None, None, next(_serials))
        self._cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(attentions)
        self._cache_key: tuple[Any, ...] | None = None

    # -- what the layers call ------------------------------------------------------------
    def prefix_term(self, index: int, attn: Any, query: torch.Tensor) -> torch.Tensor | None:
        active = self._active
        if active is None:
            return None
        B = query.shape[0]
        if active.rows is not None and active.rows != B:
            raise RuntimeError(
                f"per-row tokens were set for {active.rows} rows but the model got a batch of {B}; "
                "call set_row_tokens with one entry per row (beam search and num_return_sequences>1 "
                "change the batch size and are not supported with per-row tokens)"
            )
        k_scaled, v_gated = self._projected(index, attn, query.dtype)
        return prefix_attention(query, k_scaled, v_gated, active.mask_bias)

    def _projected(self, index: int, attn: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        active = self._active
        assert active is not None
        grad = torch.is_grad_enabled() and (active.prefix.requires_grad or active.gates.requires_grad)
        if not grad:
            key = (active.serial, active.prefix._version, active.gates._version, dtype)
            if key != self._cache_key:
                self._cache = [None] * len(self._cache)
                self._cache_key = key
            hit = self._cache[index]
            if hit is not None:
                return hit
        if active.rows is not None and active.groups:
            out = self._project_rows(index, attn, active, dtype)
        else:
            prefix = active.prefix if active.prefix.dim() == 3 else active.prefix[None]  # (Bp, n, d)
            gates = active.gates[:, index] if active.gates.dim() == 3 else active.gates[index][None]  # (Bp, H)
            out = _project(attn, prefix, gates, dtype)
        if not grad:
            self._cache[index] = (out[0].detach(), out[1].detach())
        return out

    def _project_rows(
        self, index: int, attn: Any, active: _Active, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row K_p, V_p (B, H, n_max, hd), each distinct token projected alone, as a shared one is.

        A matmul's rounding depends on how many rows it multiplies, so projecting the stacked
        (B, n, d) prefix in one call would make a row's numbers depend on its neighbours'
        tokens. Projected on its own (1, n, d), a token gives bit for bit what `set_token`
        gives it: per-row serving (a shadow twin beside a served row) changes no other answer.
        Rows without a token keep zero keys and values (their term is exactly 0).
        """
        B, n_max, _ = active.prefix.shape
        k_all = v_all = None
        for rows, n in active.groups:
            first = rows[0]
            # clone: a fresh allocation, aligned like the token's own tensor
            prefix = active.prefix[first : first + 1, :n].clone()  # (1, n, d)
            k, v = _project(attn, prefix, active.gates[first : first + 1, index], dtype)  # (1, H, n, hd) each
            if k_all is None or v_all is None:
                k_all = k.new_zeros(B, k.shape[1], n_max, k.shape[3])  # (B, H, n_max, hd)
                v_all = v.new_zeros(B, v.shape[1], n_max, v.shape[3])
            for row in rows:
                k_all[row, :, :n] = k[0]
                v_all[row, :, :n] = v[0]
        assert k_all is not None and v_all is not None  # set_row_tokens keeps per-row states with a token only
        return k_all, v_all

    # -- swapping ------------------------------------------------------------------------
    def use_trainable(self) -> None:
        """Make the adapter's own trainable prefix and gates the active token (training, export)."""
        self._active = _Active(self.prefix, self.gates, None, None, next(_serials))

    def set_token(self, token: Token | None) -> None:
        """Swap the active token in place for the whole batch; None = the bare base model.

        Checks shapes (and the base-model digest when both sides know it) and casts to the
        model's dtype/device only when they differ, so a prepared token swaps in microseconds.
        """
        if token is None:
            self._active = None
            return
        prefix, gates = self._checked(token)
        self._active = _Active(prefix, gates, None, None, next(_serials))

    def set_row_tokens(self, tokens: Sequence[Token | None]) -> None:
        """One token (or None for the base model) per batch row; tokens may differ in n_tokens.

        Rows are stacked into P (B, n_max, d) and gates (B, L, H); a row without a token gets
        zero gates (its output is exactly the base model's) and a shorter token's padded
        prefix slots are masked out of its softmax.
        """
        if len(tokens) == 0:
            raise ValueError("set_row_tokens needs at least one row")
        checked = [self._checked(t) if t is not None else None for t in tokens]
        present = [c for c in checked if c is not None]
        if not present:
            self._active = None
            return
        B, d = len(tokens), self.shape.hidden_size
        n_max = max(p.shape[0] for p, _ in present)
        dtype = present[0][0].dtype
        prefix = torch.zeros(B, n_max, d, dtype=dtype, device=self.device)  # (B, n_max, d)
        gates = torch.zeros(B, self.shape.num_layers, self.shape.num_heads, dtype=dtype, device=self.device)
        mask = torch.zeros(B, 1, 1, n_max, dtype=torch.float32, device=self.device)  # (B, 1, 1, n_max)
        padded = False
        groups: dict[int, tuple[list[int], int]] = {}  # id of the caller's token -> (its rows, n_tokens)
        for row, item in enumerate(checked):
            if item is None:
                continue  # zero gates: the term is exactly 0 for this row
            p, g = item
            groups.setdefault(id(tokens[row]), ([], p.shape[0]))[0].append(row)
            prefix[row, : p.shape[0]] = p
            gates[row] = g
            if p.shape[0] < n_max:
                mask[row, :, :, p.shape[0] :] = -math.inf
                padded = True
        self._active = _Active(
            prefix,
            gates,
            mask.to(self.model_dtype) if padded else None,
            B,
            next(_serials),
            tuple((tuple(rows), n) for rows, n in groups.values()),
        )

    @contextlib.contextmanager
    def using(self, token: Token | None) -> Iterator[None]:
        """Run a block with another active token, then restore the previous one."""
        previous = self._active
        try:
            self.set_token(token)
            yield
        finally:
            self._active = previous

    def disabled(self) -> contextlib.AbstractContextManager[None]:
        """The bare base model for the duration of a block (DPO's reference policy)."""
        return self.using(None)

    @property
    def active(self) -> str:
        a = self._active
        if a is None:
            return "none"
        if a.prefix is self.prefix:
            return "trainable"
        return "rows" if a.rows is not None else "token"

    def _checked(self, token: Token) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, gates = _unpack(token)
        d, L, H = self.shape.hidden_size, self.shape.num_layers, self.shape.num_heads
        if prefix.dim() != 2 or prefix.shape[1] != d or prefix.shape[0] < 1:
            raise BaseModelMismatchError(f"token prefix has shape {tuple(prefix.shape)}, this model needs (n, {d})")
        if tuple(gates.shape) != (L, H):
            raise BaseModelMismatchError(f"token gates have shape {tuple(gates.shape)}, this model needs ({L}, {H})")
        manifest = getattr(token, "manifest", None)
        token_digest = getattr(manifest, "base_model_digest", None)
        if self.base_digest and token_digest and token_digest != self.base_digest:
            raise BaseModelMismatchError(
                f"token was trained on base model {token_digest[:12]}…, this model is {self.base_digest[:12]}…"
            )
        if prefix.dtype != self.model_dtype or prefix.device != self.device:
            prefix = prefix.to(device=self.device, dtype=self.model_dtype)
        if gates.dtype != self.model_dtype or gates.device != self.device:
            gates = gates.to(device=self.device, dtype=self.model_dtype)
        return prefix, gates

    # -- the trainable token -------------------------------------------------------------
    def num_parameters(self) -> int:
        """n*d + L*H: the paper's count (846 for SmolLM2-135M with one token)."""
        return self.prefix.numel() + self.gates.numel()

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached fp32 CPU copies of the trainable prefix (n, d) and gates (L, H)."""
        return self.prefix.detach().float().cpu().clone(), self.gates.detach().float().cpu().clone()

    def load_trainable(self, token: Token) -> None:
        """Copy a token into the trainable tensors (to continue training from it)."""
        prefix, gates = _unpack(token)
        if not torch.isfinite(prefix).all() or not torch.isfinite(gates).all():
            raise InvalidTokenError("token holds non-finite values (NaN or inf)")
        self._checked(token)
        with torch.no_grad():
            if prefix.shape != self.prefix.shape:
                self.prefix = nn.Parameter(prefix.to(device=self.device, dtype=self.prefix.dtype).clone())
            else:
                self.prefix.copy_(prefix)
            self.gates.copy_(gates)
        self.use_trainable()


def _project(
    attn: Any, prefix: torch.Tensor, gates: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """K_p * scaling and tanh(g) * V_p of one layer for prefix (Bp, n, d) and that layer's gates (Bp, H)."""
    k, v = project_prefix(attn, prefix)  # (Bp, H, n, hd) each
    scaling = float(attn.scaling)
    gate = torch.tanh(gates.float()).to(v.dtype)[:, :, None, None]  # (Bp, H, 1, 1)
    return (k * scaling).to(dtype), (v * gate).to(dtype)


def get_adapter(model: nn.Module) -> AlignerAdapter | None:
    """The adapter attached to `model`, or None."""
    return model.__dict__.get(_ADAPTER_ATTR)


def require_adapter(model: nn.Module) -> AlignerAdapter:
    adapter = get_adapter(model)
    if adapter is None:
        raise NotAttachedError("no Aligner adapter is attached to this model; call aligner.attach(model) first")
    return adapter


def _attention_modules(model: Any) -> list[nn.Module]:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; Aligner wraps Llama-family causal LMs: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UnsupportedModelError(f"cannot find the decoder layers of {type(model).__name__}")
    attentions = [layer.self_attn for layer in layers]
    for attn in attentions:
        if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")):
            raise UnsupportedModelError(f"{type(attn).__name__} does not have the Llama attention shape")
    return attentions


def attach(model: Any, config: AlignerConfig | None = None, *, base_digest: str | None = None) -> AlignerAdapter:
    """Freeze `model`, wrap its attention layers and return the adapter that owns the token.

    The trainable token is active at first; with gate_init=0 the model's outputs equal the
    base model's. `base_digest` (from `aligner.providers`) lets `set_token` refuse tokens
    trained on another base model. Attaching twice raises AlreadyAttachedError.
    """
    if get_adapter(model) is not None:
        raise AlreadyAttachedError("an Aligner adapter is already attached to this model; detach it first")
    attentions = _attention_modules(model)
    adapter = AlignerAdapter(model, config or AlignerConfig(), attentions)
    adapter.base_digest = base_digest
    adapter.__dict__["_requires_grad"] = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for index, attn in enumerate(attentions):
        # An instance attribute shadows the class's forward; deleting it restores the original.
        attn.forward = make_forward(adapter, index, attn)
    model.__dict__[_ADAPTER_ATTR] = adapter
    return adapter


def detach(model: Any) -> AlignerAdapter:
    """Remove the adapter: original forwards and requires_grad flags come back exactly."""
    adapter = require_adapter(model)
    for attn in adapter.__dict__["_attentions"]:
        attn.__dict__.pop("forward", None)
    flags: dict[str, bool] = adapter.__dict__["_requires_grad"]
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, True))
    del model.__dict__[_ADAPTER_ATTR]
    adapter._active = None
    return adapter
