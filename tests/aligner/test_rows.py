"""Per-row tokens: each row of a left-padded batch behaves as if it ran alone with its token."""

from __future__ import annotations

import pytest
import torch

from aligner import attach
from aligner.generation import encode_chat, generate, generate_ids
from tests.aligner.conftest import random_token


def _rows(vocab: int, lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g) for n in lengths]


def _left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = r
        mask[i, T - len(r) :] = 1
    return ids, mask


def test_each_row_equals_running_alone(tiny) -> None:
    model, _, digests = tiny
    adapter = attach(model)
    a = random_token(digests.shape, 1, seed=1)
    b = random_token(digests.shape, 3, seed=2)  # another n_tokens in the same batch
    tokens = [a, None, b, a, b]
    rows = _rows(model.config.vocab_size, [5, 9, 3, 7, 6])
    ids, mask = _left_pad(rows, pad=2)

    # The prefix keys carry no rotary embedding, so with n > 1 the prefix scores depend on the
    # query's absolute position: a left-padded forward needs positions from the mask, which
    # is what generate() does.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        adapter.set_row_tokens(tokens)
        batched = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits  # (B, T, V)
    batched_gen = generate_ids(model, ids, mask, tokens=tokens, max_new_tokens=8)
    assert adapter.active == "rows"  # generate_ids restored what was active before it

    for i, (row, tok) in enumerate(zip(rows, tokens, strict=True)):
        adapter.set_token(tok)
        with torch.no_grad():
            alone = model(input_ids=row[None]).logits[0]  # (T_i, V)
        assert torch.allclose(batched[i, -len(row) :], alone, atol=1e-5), f"row {i} logits differ"
        gen = generate_ids(model, row[None], torch.ones(1, len(row), dtype=torch.long), max_new_tokens=8)
        assert torch.equal(batched_gen[i], gen[0]), f"row {i}: greedy output differs"


def test_tokens_change_the_output(tiny_llama) -> None:
    model, _, digests = tiny_llama
    adapter = attach(model)
    rows = _rows(model.config.vocab_size, [6, 6])
    ids, mask = _left_pad(rows, pad=2)
    tok = random_token(digests.shape, 2, seed=7, gate_scale=3.0)
    with torch.no_grad():
        adapter.set_row_tokens([tok, None])
        out = model(input_ids=ids, attention_mask=mask).logits
        adapter.set_token(None)
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (out[0] - base[0]).abs().max() > 1e-3
    assert torch.equal(out[1], base[1])  # the row without a token is exactly the base model


def test_batch_size_mismatch_is_an_error(tiny_llama) -> None:
    model, _, digests = tiny_llama
    adapter = attach(model)
    adapter.set_row_tokens([random_token(digests.shape, 1, seed=1), None])
    ids = torch.randint(3, 100, (3, 4))
    with pytest.raises(RuntimeError, match="per-row tokens were set for 2 rows"):
        model(input_ids=ids)


def test_generate_text_with_chat_template(tiny_llama) -> None:
    model, tokenizer, digests = tiny_llama
    attach(model)
    prompts = ["Hello there", "What is two plus two? Answer briefly."]
    enc = encode_chat(tokenizer, prompts)
    assert enc["attention_mask"][0, 0] == 0  # left padded
    tok = random_token(digests.shape, 1, seed=3, gate_scale=3.0)
    mixed = generate(model, tokenizer, prompts, row_tokens=[tok, None], max_new_tokens=5)
    alone = [
        generate(model, tokenizer, [prompts[0]], row_tokens=[tok], max_new_tokens=5)[0],
        generate(model, tokenizer, [prompts[1]], max_new_tokens=5)[0],
    ]
    assert mixed == alone
