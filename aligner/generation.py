"""Generation helpers: chat prompts, greedy decoding, and one token (or none) per batch row.

A gate runs a candidate and a baseline in one batch, a replica shadows a challenger:
`generate(model, tokenizer, prompts, row_tokens=[cand, None, ...])` sets per-row tokens
for the call and restores the adapter's previous active token afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from aligner.model import Token, get_adapter, require_adapter

Message = dict[str, str]
Prompt = str | Sequence[Message]


def to_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def encode_chat(tokenizer: Any, prompts: Sequence[Prompt], system: str | None = None) -> Any:
    """Left-padded input_ids/attention_mask of chat prompts ending with the assistant header."""
    texts = [
        tokenizer.apply_chat_template(to_messages(p, system), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


@contextlib.contextmanager
def using_row_tokens(model: Any, tokens: Sequence[Token | None] | None) -> Iterator[None]:
    """Per-row tokens for the duration of a block; None leaves the active token as it is."""
    if tokens is None:
        yield
        return
    adapter = get_adapter(model)
    if adapter is None:
        if any(t is not None for t in tokens):
            require_adapter(model)  # raises NotAttachedError with the fix in its message
        yield
        return
    previous = adapter._active
    try:
        adapter.set_row_tokens(tokens)
        yield
    finally:
        adapter._active = previous


@torch.no_grad()
def generate_ids(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    tokens: Sequence[Token | None] | None = None,
    max_new_tokens: int = 64,
    pad_token_id: int | None = None,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Greedy new token ids (B, <=max_new_tokens) for left-padded inputs, one token per row if given."""
    if tokens is not None and len(tokens) != input_ids.shape[0]:
        raise ValueError(f"got {len(tokens)} row tokens for a batch of {input_ids.shape[0]} prompts")
    pad = pad_token_id if pad_token_id is not None else model.generation_config.pad_token_id
    generate_kwargs.setdefault("do_sample", False)
    with using_row_tokens(model, tokens):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            **generate_kwargs,
        )
    return out[:, input_ids.shape[1] :]  # (B, new)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    row_tokens: Sequence[Token | None] | None = None,
    max_new_tokens: int = 64,
    system: str | None = None,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy chat completions, decoded, in batches; `row_tokens[i]` applies to `prompts[i]`."""
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = encode_chat(tokenizer, chunk, system)
        rows = row_tokens[start : start + batch_size] if row_tokens is not None else None
        new = generate_ids(
            model,
            enc["input_ids"],
            enc["attention_mask"],
            tokens=rows,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **generate_kwargs,
        )
        outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return [o.strip() for o in outputs]
