"""Continuous batching for offline greedy decoding, and the KV-cache surgery it rests on.

`model.generate` decodes a batch until its longest row is done: rows that finish early
sit in the batch as padding. `generate_continuous` keeps `width` rows decoding: a row
leaves the batch (and the KV cache) as soon as it emits end-of-sequence or reaches
`max_new_tokens`, and waiting prompts are prefilled and join the running cache in its
place (left-padded and masked, so every row attends to its own tokens only). Each row
carries its own token (or None for the bare base model) for its whole life.

The schedule is a pure function of the prompts, their order and the settings, so the
outputs are reproducible run to run. They are the greedy continuations of each prompt
up to floating-point effects of batch composition (the same caveat as any batching).

The cache helpers (`joinable`, `merge_cache`, `trim_left`) are shared with the serving
engine (`serving.engine`), which admits live requests the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from aligner.generation import Prompt, to_messages
from aligner.model import Token, get_adapter, require_adapter


def joinable(cache: Any) -> bool:
    """Rows can join only a plain dynamic cache (full attention): its layers are (B, H, T, hd) tensors."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def trim_left(cache: Any, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns no row attends to (left by finished rows), so a run that keeps
    admitting rows does not grow its cache without bound."""
    first = int(mask.any(dim=0).nonzero()[0])
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return mask[:, first:]


def left_pad(x: torch.Tensor, T: int, dim: int) -> torch.Tensor:
    missing = T - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x], dim=dim)


def merge_cache(cache: Any, new: Any, mask: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
    """Append `new`'s rows to `cache` in place, left-padding the shorter side; returns the joint mask.

    Padded slots hold zero keys and values and are masked out, exactly like the left padding
    of a batch's prompts, so every row attends to its own tokens only.
    """
    T = max(mask.shape[1], new_mask.shape[1])
    for layer, other in zip(cache.layers, new.layers, strict=True):
        layer.keys = torch.cat([left_pad(layer.keys, T, 2), left_pad(other.keys, T, 2)], dim=0)  # (B, H, T, hd)
        layer.values = torch.cat([left_pad(layer.values, T, 2), left_pad(other.values, T, 2)], dim=0)
    return torch.cat([left_pad(mask, T, 1), left_pad(new_mask, T, 1)], dim=0)  # (B, T)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a completion (the generation config's and the tokenizer's)."""
    eos: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, list | tuple):
            eos.update(int(x) for x in source)
    return eos


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt], system: str | None = None) -> list[list[int]]:
    """Token ids of each chat prompt, ending with the assistant header (no padding)."""
    texts = [
        tokenizer.apply_chat_template(to_messages(p, system), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class _RowTokens:
    """Points the adapter at the live rows' tokens, only when they changed."""

    def __init__(self, model: Any, enabled: bool) -> None:
        self.adapter = get_adapter(model)
        self.model = model
        self.enabled = enabled  # False: leave the adapter's active token as it is
        self.held: list[Token | None] | None = None

    def set(self, tokens: list[Token | None]) -> None:
        if not self.enabled:
            return
        if self.adapter is None:
            if any(t is not None for t in tokens):
                require_adapter(self.model)  # raises NotAttachedError with the fix in its message
            return
        held = self.held
        if held is not None and len(held) == len(tokens) and all(a is b for a, b in zip(held, tokens, strict=True)):
            return
        if all(t is tokens[0] for t in tokens):
            self.adapter.set_token(tokens[0])
        else:
            self.adapter.set_row_tokens(tokens)
        self.held = list(tokens)


@torch.no_grad()
def generate_continuous(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    row_tokens: Sequence[Token | None] | None = None,
    max_new_tokens: int | Sequence[int] = 64,
    width: int = 16,
    system: str | None = None,
    admit_at: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy chat completions of `prompts`, decoded `width` rows at a time with continuous batching.

    Prompts are admitted in the order given (sort them by length to keep padding small).
    Free rows are refilled once at least `admit_at` of them are free (default: a quarter of
    `width`), or when the waiting prompts all fit: each admission is one prefill pass, so
    refilling one row at a time would cost a forward pass per finished row. `progress` is
    called with the number of completions finished so far. ``max_new_tokens`` is one limit
    for every row, or one per prompt (a row leaves the batch at its own limit). Without ``row_tokens`` every
    row decodes with the adapter's active token; with them, the adapter's previous token
    is restored afterwards.
    """
    n = len(prompts)
    limits = [max_new_tokens] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
    if len(limits) != n:
        raise ValueError(f"got {len(limits)} max_new_tokens for {n} prompts")
    tokens = _checked_row_tokens(n, row_tokens, width=width, max_new_tokens=min(limits, default=1))
    if n == 0:
        return []
    admit_at = max(1, width // 4) if admit_at is None else max(1, admit_at)
    ids = encode_prompts(tokenizer, prompts, system)
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
    device = next(model.parameters()).device
    adapter = get_adapter(model)
    previous = adapter._active if adapter is not None else None
    setter = _RowTokens(model, enabled=row_tokens is not None)
    waiting = deque(range(n))
    generated: list[list[int]] = [[] for _ in range(n)]
    live: list[int] = []  # prompt index of each batch row
    cache: Any = None
    mask = positions = logits = torch.empty(0)
    finished = 0
    try:
        while waiting or live:
            free = width - len(live)
            can_join = cache is None or joinable(cache)
            if waiting and free > 0 and can_join and (not live or free >= admit_at or len(waiting) <= free):
                new = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                setter.set([tokens[i] for i in new])
                new_cache, new_mask, new_pos, new_logits = prefill(model, [ids[i] for i in new], pad, device)
                if cache is None or not live:
                    cache, mask, positions, logits = new_cache, new_mask, new_pos, new_logits
                else:
                    mask = merge_cache(cache, new_cache, mask, new_mask)
                    positions = torch.cat([positions, new_pos], dim=0)
                    logits = torch.cat([logits, new_logits], dim=0)
                live += new
            next_ids = logits.argmax(dim=-1).tolist()  # (B,)
            keep = _append_and_keep(live, next_ids, generated, eos, limits)
            finished += len(live) - len(keep)
            if progress is not None and len(keep) < len(live):
                progress(finished)
            if len(keep) < len(live):
                if not keep:
                    live, cache = [], None
                    continue
                mask, positions = keep_rows(cache, mask, positions, keep, trim=joinable(cache))
                live = [live[r] for r in keep]
                next_ids = [next_ids[r] for r in keep]
            setter.set([tokens[i] for i in live])
            mask, positions, logits = decode_step(model, next_ids, mask, positions, cache)
    finally:
        if adapter is not None:
            adapter._active = previous
    return [tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]


def _checked_row_tokens(
    n: int, row_tokens: Sequence[Token | None] | None, *, width: int, max_new_tokens: int
) -> list[Token | None]:
    if width < 1:
        raise ValueError("width must be at least 1")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    tokens: list[Token | None] = list(row_tokens) if row_tokens is not None else [None] * n
    if len(tokens) != n:
        raise ValueError(f"got {len(tokens)} row tokens for {n} prompts")
    return tokens


def _append_and_keep(
    live: list[int], next_ids: list[int], generated: list[list[int]], eos: set[int],
    limits: Sequence[int],
) -> list[int]:
    """Append each row's next token to its completion; the rows that go on (not at EOS or the length limit)."""
    keep = []
    for row, (i, tid) in enumerate(zip(live, next_ids, strict=True)):
        if int(tid) in eos:
            continue
        generated[i].append(int(tid))
        if len(generated[i]) < limits[i]:
            keep.append(row)
    return keep


def keep_rows(
    cache: Any, mask: torch.Tensor, positions: torch.Tensor, keep: list[int], *, trim: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only the batch rows `keep` in the cache, mask and positions (finished rows leave);
    with `trim`, also drop the leading cache columns no remaining row attends to."""
    index = torch.tensor(keep, device=mask.device)
    cache.batch_select_indices(index)
    mask, positions = mask[index], positions[index]
    if trim:
        mask = trim_left(cache, mask)
    return mask, positions


def decode_step(
    model: Any, next_ids: list[int], mask: torch.Tensor, positions: torch.Tensor, cache: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed each row its next token (with the token the adapter holds); returns the grown mask
    (B, T+1), the new positions (B, 1) and the next logits (B, V)."""
    device = mask.device
    mask = torch.cat([mask, torch.ones((len(next_ids), 1), dtype=mask.dtype, device=device)], dim=1)  # (B, T+1)
    positions = positions + 1  # (B, 1)
    out = model(
        input_ids=torch.tensor(next_ids, dtype=torch.long)[:, None].to(device),
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
    )
    return mask, positions, out.logits[:, -1, :].float()


def prefill(
    model: Any, prompt_ids: Sequence[Sequence[int]], pad: int, device: Any
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad the prompts and run them through the model with whatever token it holds.

    Returns the new KV cache, the (B, T) attention mask, each row's last position (B, 1)
    and the logits of each prompt's last position (B, V).
    """
    from transformers import DynamicCache

    B = len(prompt_ids)
    T = max(len(p) for p in prompt_ids)
    input_ids = torch.full((B, T), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    for i, p in enumerate(prompt_ids):
        input_ids[i, T - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, T - len(p) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    cache = DynamicCache()
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,  # the prompt's last position only: no (B, T, V) logits
    )
    return cache, mask, positions[:, -1:], out.logits[:, -1, :].float()
