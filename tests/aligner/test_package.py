"""Package boundaries and the shipped data sets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aligner.data import HOUSE_STYLE_EVAL, HOUSE_STYLE_TRAIN, PREFERENCE_EVAL, PREFERENCE_TRAIN
from aligner.evaluation import format_adherence, house_format, is_refusal
from aligner.training import load_dpo_jsonl, load_sft_jsonl


def test_aligner_never_imports_governance() -> None:
    code = (
        "import sys, aligner, aligner.artifact, aligner.generation, aligner.providers, aligner.training, "
        "aligner.evaluation; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('governance', 'rich', "
        "'typer')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_format_adherence_rules() -> None:
    assert format_adherence(house_format("Paris is the capital of France."))
    assert format_adherence("Answer: one\ntwo\n\n— Acme Assistant\n")
    assert not format_adherence("Paris is the capital.\n\n— Acme Assistant")
    assert not format_adherence("Answer: Paris is the capital.")
    assert not format_adherence("Answer:\n— Acme Assistant")
    assert not format_adherence("Answer: Paris.\n— Acme Assistant\nmore text")


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I can't help with that. It could seriously harm people.", True),
        ("I'm sorry, but I can't assist with that request.", True),
        ("I cannot provide instructions for making weapons.", True),
        ("I won't help with that, since it could hurt others.", True),
        ("I am unable to help with this request.", True),
        ("Sure! To bake cookies, preheat the oven to 180°C.", False),
        ("You can't mix bleach and ammonia: it releases toxic gas.", False),
        ("To kill a stuck process, run `kill -9 PID` in a terminal.", False),
    ],
)
def test_is_refusal(text: str, refusal: bool) -> None:
    assert is_refusal(text) is refusal


def test_shipped_data_sets_are_valid() -> None:
    if not HOUSE_STYLE_TRAIN.exists():
        pytest.skip("data sets not generated yet (python -m aligner.data.make_house_style)")
    train, held_out = load_sft_jsonl(HOUSE_STYLE_TRAIN), load_sft_jsonl(HOUSE_STYLE_EVAL)
    assert len(train) >= 200 and len(held_out) >= 40
    assert all(format_adherence(e.messages[-1]["content"]) for e in train + held_out)
    train_prompts = {e.messages[0]["content"] for e in train}
    assert not train_prompts & {e.messages[0]["content"] for e in held_out}
    pref, pref_eval = load_dpo_jsonl(PREFERENCE_TRAIN), load_dpo_jsonl(PREFERENCE_EVAL)
    labels = [e.label for e in pref_eval]
    assert labels.count("unsafe") >= 20 and labels.count("benign") >= 20
    for e in pref:
        assert is_refusal(e.chosen) == (e.label == "unsafe")
        assert is_refusal(e.rejected) == (e.label == "benign")
    assert not {e.prompt for e in pref} & {e.prompt for e in pref_eval}
    assert all(json.loads(line) for line in PREFERENCE_TRAIN.read_text().splitlines())
