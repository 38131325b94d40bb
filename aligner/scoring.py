"""Teacher-forced scoring: how likely a given answer is under a model, token by token.

The gate's coherence suite asks how fluent an answer is by the bare base model's own
measure: the mean log-likelihood per answer token of ``answer`` after the chat prompt of
``prompt`` (the same template and system prompt as generation). One forward pass per
batch, no decoding. Rows are sorted by length and packed up to a token budget so that
padding stays small, and the vocabulary projection runs only on the answer positions
(on a 135M model with a 49k vocabulary it is a third of the work of a full pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from aligner.batching import encode_prompts
from aligner.generation import Prompt, using_row_tokens
from aligner.model import Token


@torch.no_grad()
def answer_logliks(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    *,
    token: Token | None = None,
    system: str | None = None,
    batch_tokens: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> list[float | None]:
    """Mean per-token log-likelihood (nats) of each answer after its prompt; None for an empty answer.

    ``token`` is the Aligner token to score under (None: the bare base model, whatever
    token the adapter holds; it is restored afterwards). ``batch_tokens`` bounds the padded
    tokens of one forward pass (rows x longest row).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(answers)} answers for {len(prompts)} prompts")
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be at least 1")
    head_ids = encode_prompts(tokenizer, prompts, system)
    answer_ids = [list(ids) for ids in tokenizer(list(answers), add_special_tokens=False)["input_ids"]] \
        if answers else []
    out: list[float | None] = [None] * len(prompts)
    order = sorted((i for i in range(len(prompts)) if answer_ids[i]),
                   key=lambda i: len(head_ids[i]) + len(answer_ids[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    done = 0
    start = 0
    while start < len(order):
        # rows sorted by length: the last row of a batch is its longest
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * _length(head_ids, answer_ids, order[stop]) <= batch_tokens:
            stop += 1
        rows = order[start:stop]
        T = max(_length(head_ids, answer_ids, i) for i in rows)
        ids = torch.full((len(rows), T), pad, dtype=torch.long)  # (B, T), right-padded
        mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
        for r, i in enumerate(rows):
            seq = head_ids[i] + answer_ids[i]
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        with using_row_tokens(model, [token] * len(rows)):
            hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, C)
        for r, i in enumerate(rows):
            p, a = len(head_ids[i]), len(answer_ids[i])
            # the logits at position t predict token t + 1
            logits = head(hidden[r, p - 1 : p + a - 1]).float()  # (a, V)
            target = torch.tensor(answer_ids[i], device=logits.device)  # (a,)
            lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]  # (a,)
            out[i] = round(float(lp.mean()), 6)
        done += len(rows)
        if progress is not None:
            progress(done)
        start = stop
    return out


def _length(head_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]], i: int) -> int:
    return len(head_ids[i]) + len(answer_ids[i])
