"""Continuous batching: each row's greedy output equals decoding it alone with its token."""

from __future__ import annotations

import pytest
import torch

from aligner import attach
from aligner.batching import generate_continuous
from aligner.generation import generate
from tests.aligner.conftest import random_token

PROMPTS = [
    "hi", "What is 2 + 2?", "Tell me a story about a cat and a dog who became friends.",
    "Name a colour.", "Why is the sky blue? Explain in detail, please.", "ok",
    "List three fruits.", "Translate 'hello' to French.", "Count to five.",
]


def test_rows_equal_running_alone_with_their_tokens(tiny) -> None:
    model, tokenizer, digests = tiny
    adapter = attach(model)
    a = random_token(digests.shape, 1, seed=1)
    b = random_token(digests.shape, 3, seed=2)
    tokens = [a, None, b, a, None, b, a, None, b]
    before = adapter.active
    # Width 3 for 9 prompts: rows leave and prompts join the running cache many times.
    batched = generate_continuous(model, tokenizer, PROMPTS, row_tokens=tokens, max_new_tokens=12, width=3,
                                  admit_at=1)
    alone = [generate(model, tokenizer, [p], row_tokens=[t], max_new_tokens=12, batch_size=1)[0]
             for p, t in zip(PROMPTS, tokens, strict=True)]
    assert batched == alone
    assert adapter.active == before  # what was active before the call


def test_matches_static_batches_and_restores_the_active_token(tiny_llama) -> None:
    model, tokenizer, digests = tiny_llama
    adapter = attach(model)
    a = random_token(digests.shape, 2, seed=3)
    adapter.set_token(a)
    static = generate(model, tokenizer, PROMPTS, row_tokens=[None] * len(PROMPTS), max_new_tokens=10, batch_size=4)
    progress: list[int] = []
    cont = generate_continuous(model, tokenizer, PROMPTS, row_tokens=[None] * len(PROMPTS), max_new_tokens=10,
                               width=4, progress=progress.append)
    assert cont == static
    assert progress[-1] == len(PROMPTS) and progress == sorted(progress)
    assert adapter.active == "token"
    # Without row tokens the active token decodes every row.
    with_active = generate_continuous(model, tokenizer, PROMPTS[:3], max_new_tokens=10, width=2)
    assert with_active == generate(model, tokenizer, PROMPTS[:3], max_new_tokens=10, batch_size=1)


def test_each_row_stops_at_its_own_limit(tiny) -> None:
    # The gate's bias decisions decode 16 new tokens beside 96-token rows in one batch.
    model, tokenizer, digests = tiny
    attach(model)
    a = random_token(digests.shape, 2, seed=4)
    tokens = [a, None] * 4 + [a]
    limits = [3, 12, 1, 7, 12, 5, 2, 12, 9]
    batched = generate_continuous(model, tokenizer, PROMPTS, row_tokens=tokens, max_new_tokens=limits, width=3,
                                  admit_at=1)
    alone = [generate(model, tokenizer, [p], row_tokens=[t], max_new_tokens=m, batch_size=1)[0]
             for p, t, m in zip(PROMPTS, tokens, limits, strict=True)]
    assert batched == alone
    ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in batched]
    assert all(len(i) <= m + 1 for i, m in zip(ids, limits, strict=True))  # re-encoding may split a token


def test_bad_arguments(tiny_llama) -> None:
    model, tokenizer, _ = tiny_llama
    attach(model)
    with pytest.raises(ValueError, match="width"):
        generate_continuous(model, tokenizer, ["x"], width=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_continuous(model, tokenizer, ["x"], max_new_tokens=0)
    with pytest.raises(ValueError, match="row tokens"):
        generate_continuous(model, tokenizer, ["x", "y"], row_tokens=[None])
    with pytest.raises(ValueError, match="2 max_new_tokens for 1 prompts"):
        generate_continuous(model, tokenizer, ["x"], max_new_tokens=[3, 4])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_continuous(model, tokenizer, ["x", "y"], max_new_tokens=[3, 0])
    assert generate_continuous(model, tokenizer, []) == []
    assert torch.is_grad_enabled()
