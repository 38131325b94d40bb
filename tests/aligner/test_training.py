"""SFT and DPO on tiny models: only the token learns, runs are deterministic, bad data is named."""

from __future__ import annotations

import json

import pytest
import torch

from aligner import DataError
from aligner.artifact import AlignerToken
from aligner.training import (
    TrainConfig,
    encode_pair,
    load_dpo_jsonl,
    load_sft_jsonl,
    train_dpo,
    train_file,
    train_sft,
)

SFT_ROWS = [
    {"messages": [{"role": "user", "content": f"Question {i}?"},
                  {"role": "assistant", "content": f"Answer: item {i}.\n\n— Acme Assistant"}]}
    for i in range(6)
] + [{"prompt": "Say hi.", "response": "Answer: hi.\n\n— Acme Assistant"}]
DPO_ROWS = [
    {"prompt": f"Bad request {i}", "chosen": "I can't help with that.", "rejected": f"Sure, step {i}:"}
    for i in range(5)
]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_response_tokens_only_are_labelled(tiny_llama) -> None:
    _, tokenizer, _ = tiny_llama
    ids, n_prompt = encode_pair(tokenizer, [{"role": "user", "content": "Hi"}], "Answer: yes.", 512)
    assert tokenizer.decode(ids[n_prompt:]).startswith("Answer: yes.")
    assert tokenizer.decode(ids[:n_prompt]).rstrip().endswith("assistant")
    assert tokenizer.decode(ids[n_prompt:]).rstrip().endswith("<|im_end|>")


def test_sft_trains_only_the_token_and_is_deterministic(tiny_llama, tmp_path) -> None:
    model, tokenizer, _ = tiny_llama
    examples = load_sft_jsonl(_write(tmp_path / "d.jsonl", SFT_ROWS))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainConfig(epochs=2, batch_size=3, lr=5e-2, seed=3)
    adapter, best, history = train_sft(model, tokenizer, examples[:5], examples[5:], config)
    assert history and best == min(h["eval_loss"] for h in history)
    for name, p in model.named_parameters():
        assert not p.requires_grad and p.grad is None, name
        assert torch.equal(p, before[name]), f"{name} changed"
    assert adapter.prefix.grad is not None and adapter.gates.abs().sum() > 0
    first = adapter.export()

    # Same seed, fresh model: bit-identical token.
    from aligner import detach

    detach(model)
    adapter2, _, _ = train_sft(model, tokenizer, examples[:5], examples[5:], config)
    second = adapter2.export()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_sft_lowers_the_loss(tiny_llama, tmp_path) -> None:
    model, tokenizer, _ = tiny_llama
    examples = load_sft_jsonl(_write(tmp_path / "d.jsonl", SFT_ROWS))
    _, _, history = train_sft(model, tokenizer, examples, examples, TrainConfig(epochs=4, batch_size=7, lr=0.1))
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]


def test_dpo_reference_is_the_token_off_model(tiny_llama, tmp_path) -> None:
    model, tokenizer, _ = tiny_llama
    examples = load_dpo_jsonl(_write(tmp_path / "p.jsonl", DPO_ROWS))
    config = TrainConfig(n_tokens=2, epochs=3, batch_size=5, lr=0.1, beta=0.5)
    adapter, _, history = train_dpo(model, tokenizer, examples, examples, config)
    # At step 0 policy == reference (zero gates), so the first loss would be log 2; it must go down.
    assert history[-1]["eval_loss"] < 0.6931
    assert adapter.prefix.shape[0] == 2
    assert all(p.grad is None for p in model.parameters())


def test_dpo_nll_term_raises_the_chosen_answers(tiny_llama, tmp_path) -> None:
    """With ``sft_weight`` the chosen answers' likelihood goes up more than with pure DPO
    (pure DPO may widen the margin by pushing the rejected answers down only)."""
    from aligner import detach
    from aligner.training import _collate, encode_pair, response_logprobs

    model, tokenizer, _ = tiny_llama
    examples = load_dpo_jsonl(_write(tmp_path / "p.jsonl", DPO_ROWS))
    enc = [encode_pair(tokenizer, [{"role": "user", "content": e.prompt}], e.chosen, 384) for e in examples]

    def chosen_logp() -> float:
        with torch.no_grad():
            sums, counts = response_logprobs(model, _collate(enc, tokenizer.pad_token_id))
        return float((sums / counts).mean())

    results = {}
    for weight in (0.0, 1.0):
        config = TrainConfig(n_tokens=2, epochs=3, batch_size=5, lr=0.1, beta=0.5, sft_weight=weight)
        _, _, history = train_dpo(model, tokenizer, examples, examples, config)
        results[weight] = chosen_logp()
        assert "chosen_nll" in history[-1]
        detach(model)
    assert results[1.0] > results[0.0]


def test_train_file_writes_an_artifact(state_dir, tmp_path) -> None:
    data = _write(tmp_path / "d.jsonl", SFT_ROWS)
    result = train_file(
        "sft", data, tmp_path / "out", model_name="tiny-random-llama", state_dir=state_dir,
        config=TrainConfig(epochs=1, batch_size=4, seed=1), progress=False,
    )
    token = AlignerToken.load(tmp_path / "out")
    assert token.sha256 == result.token.sha256
    m = token.manifest
    assert (m.training_method, m.seed, m.n_tokens, m.base_model) == ("sft", 1, 1, "tiny-random-llama")
    assert m.data_digest and len(m.base_model_digest) == 64 and "eval_loss" in m.metrics


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"messages": []}\n', r":1: 'messages' must be a non-empty list"),
        ('{"prompt": "a", "response": "b"}\nnot json\n', r":2: not valid JSON"),
        ('{"prompt": "a"}\n', r":1: field 'response' must be a non-empty string"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', r":1: the last message must be"),
        ('[1, 2]\n', r":1: expected a JSON object"),
        ("\n", r"has no examples"),
    ],
)
def test_bad_sft_jsonl_names_the_line(tmp_path, content, message) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_sft_jsonl(path)


def test_bad_dpo_jsonl_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field\(s\) rejected"):
        load_dpo_jsonl(path)
    with pytest.raises(DataError, match="no such file"):
        load_dpo_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_sft_on_smollm2_learns_the_house_format(state_dir, tmp_path) -> None:
    """A short run on real data: one token lowers the held-out loss of house-style answers."""
    from aligner.data import HOUSE_STYLE_EVAL, HOUSE_STYLE_TRAIN

    if not HOUSE_STYLE_TRAIN.exists():
        pytest.skip("house-style data not generated yet")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(HOUSE_STYLE_TRAIN.read_text().splitlines(keepends=True)[:24]))
    held_out = tmp_path / "eval.jsonl"
    held_out.write_text("".join(HOUSE_STYLE_EVAL.read_text().splitlines(keepends=True)[:8]))
    result = train_file(
        "sft", data, tmp_path / "tok", eval_data=held_out, state_dir=state_dir,
        config=TrainConfig(epochs=1, batch_size=8, lr=3e-2, eval_every=1), progress=False,
    )
    losses = [h["eval_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    token = AlignerToken.load(tmp_path / "tok")
    assert token.manifest.param_count == 846 and token.manifest.base_model == "smollm2-135m-instruct"
