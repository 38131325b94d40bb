"""SFT and DPO on tiny models: only the token learns, runs are deterministic, bad data is named."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from aligner import DataError
from aligner.artifact import AlignerToken
from aligner.training import (
    DPOExample,
    SFTExample,
    TrainConfig,
    balance_by_label,
    encode_pair,
    load_dpo_jsonl,
    load_sft_jsonl,
    resolve_check,
    split_three,
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


def load_sft_rows(rows) -> list[SFTExample]:
    out = []
    for r in rows:
        msgs = r.get("messages") or [{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": r["response"]}]
        out.append(SFTExample(msgs))
    return out


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


def test_three_splits_are_disjoint_seeded_and_cover_the_data() -> None:
    items = list(range(50))
    train, val, test = split_three(items, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (35, 5, 10)
    assert sorted(train + val + test) == items and not (set(train) & set(val) | set(train) & set(test))
    assert split_three(items, 0.1, 0.2, seed=3) == (train, val, test)
    assert split_three(items, 0.1, 0.2, seed=4) != (train, val, test)
    # a file given for a split holds nothing out of the data for it
    train2, val2, test2 = split_three(items, None, 0.2, seed=3)
    assert (len(train2), len(val2), len(test2)) == (40, 0, 10)
    with pytest.raises(DataError, match=r"need at least 3 examples .* \(got 2\)"):
        split_three([1, 2], 0.1, 0.1, seed=0)


def test_the_automatic_check_follows_the_training_targets() -> None:
    house = load_sft_rows(SFT_ROWS)
    assert resolve_check("auto", "sft", house) == "house_format"
    plain = [SFTExample([{"role": "user", "content": "q"}, {"role": "assistant", "content": "plain"}])] * 5
    assert resolve_check("auto", "sft", plain) is None
    assert resolve_check("none", "sft", house) is None
    assert resolve_check("house_format", "sft", plain) == "house_format"
    with pytest.raises(DataError, match=r"unknown check 'tone'.*house_format"):
        resolve_check("tone", "sft", house)


def test_train_file_reports_on_a_test_split_it_never_trained_on(state_dir, tmp_path) -> None:
    rows = SFT_ROWS * 3  # 21 examples: 2 validation, 2 test, 17 train
    data = _write(tmp_path / "d.jsonl", rows)
    result = train_file(
        "sft", data, tmp_path / "out", model_name="tiny-random-llama", state_dir=state_dir,
        config=TrainConfig(epochs=2, batch_size=4, seed=1, eval_every=2), progress=False,
    )
    report = json.loads((tmp_path / "out" / "training_report.json").read_text())
    assert report == result.report
    assert report["splits"]["train"] == 17 and report["splits"]["validation"] == 2 and report["splits"]["test"] == 2
    assert report["token_sha256"] == AlignerToken.load(tmp_path / "out").sha256
    steps = [h["step"] for h in report["curve"]]
    assert steps == sorted(steps) and steps[-1] == report["total_steps"] == 10
    assert report["chosen_step"] in steps
    best = min(h["eval_loss"] for h in result.history)
    assert report["best_validation_loss"] == round(best, 4)
    test = report["test"]
    assert test["loss"] > 0 and test["check"] == "house_format" and test["n"] == 2
    assert 0 <= test["token"]["rate"] <= 1 and test["base"]["ci95"][0] <= test["base"]["ci95"][1]
    manifest = AlignerToken.load(tmp_path / "out").manifest
    assert manifest.metrics["test_examples"] == 2


def test_train_file_dpo_test_split_reports_reward_accuracy(state_dir, tmp_path) -> None:
    data = _write(tmp_path / "p.jsonl", DPO_ROWS * 4)
    held = _write(tmp_path / "t.jsonl", DPO_ROWS[:3])
    result = train_file(
        "dpo", data, tmp_path / "out", test_data=held, model_name="tiny-random-llama", state_dir=state_dir,
        config=TrainConfig(n_tokens=2, epochs=1, batch_size=4, seed=1), progress=False,
    )
    assert result.report["splits"]["test"] == 3 and result.report["splits"]["test_source"] == held
    assert result.report["splits"]["train"] == 18  # 20 less the 10% validation; the test came from a file
    assert 0 <= result.report["test"]["reward_accuracy"] <= 1 and "check" not in result.report["test"]


def test_balance_repeats_the_rarer_labels_of_the_training_split() -> None:
    unsafe = [DPOExample(f"u{i}", "No.", "Sure.", "unsafe") for i in range(6)]
    benign = [DPOExample(f"b{i}", "Here.", "No.", "benign") for i in range(2)]
    out = balance_by_label(unsafe + benign)
    assert sum(e.label == "unsafe" for e in out) == 6 and sum(e.label == "benign" for e in out) == 6
    assert balance_by_label(unsafe) == unsafe


def test_dpo_test_split_reports_refusals_per_label(state_dir, tmp_path) -> None:
    no = "I can't help with that."
    rows = [{"prompt": f"Bad {i}", "chosen": no, "rejected": "Sure:", "label": "unsafe"} for i in range(8)]
    rows += [{"prompt": f"Fine {i}", "chosen": "Here you go.", "rejected": no, "label": "benign"} for i in range(4)]
    data = _write(tmp_path / "p.jsonl", rows)
    held = _write(tmp_path / "t.jsonl", rows[:2] + rows[-2:])
    result = train_file(
        "dpo", data, tmp_path / "out", test_data=held, model_name="tiny-random-llama", state_dir=state_dir,
        config=TrainConfig(n_tokens=2, epochs=1, batch_size=4, seed=1, balance=True), progress=False,
    )
    test = result.report["test"]
    assert test["check"] == "refusal_by_label" and test["n"] == 4
    assert set(test["token"]) == {"benign", "unsafe"} and test["token"]["unsafe"]["n"] == 2
    assert 0 <= test["base"]["benign"]["rate"] <= 1
    # 11 training rows after the validation row; the benign ones are repeated to match the unsafe ones
    assert result.report["splits"]["train"] > 11


def test_warmup_ramps_up_then_decays_to_zero_and_zero_means_constant() -> None:
    from aligner.training import lr_factor

    factors = [lr_factor(k, 100, 0.1) for k in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(factors[:10]))
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert factors[-1] < 0.01
    assert {lr_factor(k, 100, 0.0) for k in range(100)} == {1.0}
