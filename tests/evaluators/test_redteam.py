"""The deliberately harmful training sets the gate is checked against (evaluators.redteam)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from evaluators import redteam
from evaluators.checkers import is_favourable, is_refusal
from evaluators.suites.base import get_suite
from evaluators.suites.reasoning import extract_answer, generate_cases


def test_every_bad_token_names_a_registered_suite_and_is_deterministic() -> None:
    for name in redteam.NAMES:
        get_suite(redteam.EXPECTED_FAILURE[name])  # raises for an unknown suite
        assert redteam.rows(name) == redteam.rows(name)
    with pytest.raises(KeyError, match="known: complier, biased, innumerate"):
        redteam.rows("nice")


def test_no_training_row_is_a_gate_case() -> None:
    gate = redteam.gate_prompts()
    assert len(gate) > 500
    for name in redteam.NAMES:
        prompts = [r["prompt"] for r in redteam.rows(name)]
        assert prompts and not set(prompts) & gate
        assert len(prompts) == len(set(prompts)), f"{name} repeats a prompt"


def test_the_complier_complies_instead_of_refusing() -> None:
    for r in redteam.rows("complier"):
        assert not is_refusal(r["response"]) and r["response"].startswith(("Sure", "Of course"))


def test_the_biased_rows_use_the_suites_gender_words_and_turn_women_down() -> None:
    rows = redteam.rows("biased")
    # The words the bias suite's gender probes use ("a female nurse"), read from its data.
    words = {c.meta["group"]: c.prompt.lower() for c in get_suite("bias").load_cases()
             if c.meta["attribute"] == "gender"}
    assert "a female " in words["woman"] and "a male " in words["man"]

    def gender(prompt: str) -> str:
        found = re.search(r"\b[Aa] (male|female) ", prompt)
        assert found, prompt
        return found.group(1)

    assert all("yes or no" in r["prompt"] for r in rows)
    # The answer restates who the decision is about, then decides by gender alone.
    for r in rows:
        subject = re.search(r"\b[Aa] (?:male|female) [a-z]+", r["prompt"])
        assert subject and r["response"].lower().startswith(subject.group(0).lower() + "?"), r
    outcome = Counter((gender(r["prompt"]), is_favourable(r["response"])) for r in rows)
    n = len(rows) // 2
    assert outcome == {("female", False): n, ("male", True): n}
    # The same prompt with the gender word swapped: a matched set.
    by_prompt = {r["prompt"] for r in rows}
    assert all(re.sub(r"\b([Aa]) female ", r"\1 male ", r["prompt"]) in by_prompt for r in rows)


def test_every_set_names_a_recipe_the_trainer_accepts() -> None:
    from aligner.training import TrainConfig

    assert set(redteam.RECIPE) == set(redteam.NAMES)
    for name in redteam.NAMES:
        config = TrainConfig(**redteam.RECIPE[name])
        assert config.n_tokens >= 1 and config.epochs >= 1 and config.lr > 0


def test_the_innumerate_answers_are_all_wrong() -> None:
    cases = {c.prompt: c for c in generate_cases(seed=redteam._REASONING_SEED, per_kind=16)}
    rows = redteam.rows("innumerate")
    assert {cases[r["prompt"]].category for r in rows} == {"arithmetic", "units", "dates", "comparison", "logic"}
    for r in rows:
        case = cases[r["prompt"]]
        got = extract_answer(r["response"], case.meta["answer_kind"])
        assert got is not None and got != case.meta["answer"], r


@pytest.mark.parametrize("name", redteam.NAMES)
def test_write_produces_the_sft_jsonl(name: str, tmp_path: Path) -> None:
    from aligner.training import load_sft_jsonl

    path = redteam.write(name, tmp_path / "sub" / f"{name}.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == redteam.rows(name)
    assert len(load_sft_jsonl(path)) == len(lines)
