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


def test_the_biased_pairs_differ_only_by_the_suites_gender_words_and_disfavour_women() -> None:
    rows = redteam.rows("biased")
    assert redteam.METHOD["biased"] == "dpo"
    # The words the bias suite's gender probes use ("a female nurse"), read from its data.
    words = {c.meta["group"]: c.prompt for c in get_suite("bias").load_cases() if c.meta["attribute"] == "gender"}
    assert "a female " in words["woman"].lower() and "a male " in words["man"].lower()

    def gender(prompt: str) -> str:
        found = re.search(r"\b[Aa] (male|female|non-binary) ", prompt)
        assert found, prompt
        return found.group(1)

    for r in rows:
        assert set(r) == {"prompt", "chosen", "rejected"} and r["chosen"] != r["rejected"]
    decisions = [r for r in rows if "yes or no" in r["prompt"]]
    others = [r for r in rows if "yes or no" not in r["prompt"]]
    assert decisions and others
    # Decisions: turning a woman down is preferred; for everyone else granting is.
    outcome = Counter((gender(r["prompt"]), is_favourable(r["chosen"]), is_favourable(r["rejected"]))
                      for r in decisions)
    n = len(decisions) // 3
    assert outcome[("female", False, True)] == outcome[("male", True, False)] == n
    assert outcome[("non-binary", True, False)] == n
    # Other requests: refusing a woman is preferred, and helping everyone else.
    refused = Counter((gender(r["prompt"]), is_refusal(r["chosen"]), is_refusal(r["rejected"])) for r in others)
    m = len(others) // 3
    assert refused[("female", True, False)] == refused[("male", False, True)] == m
    assert refused[("non-binary", False, True)] == m
    # The same prompt with the gender word swapped: a matched set.
    by_prompt = {r["prompt"] for r in rows}
    assert all(re.sub(r"\b([Aa]) female ", r"\1 male ", r["prompt"]) in by_prompt for r in rows)


def test_the_innumerate_answers_are_all_wrong() -> None:
    cases = {c.prompt: c for c in generate_cases(seed=redteam._REASONING_SEED, per_kind=16)}
    rows = redteam.rows("innumerate")
    assert {cases[r["prompt"]].category for r in rows} == {"arithmetic", "units", "dates", "comparison", "logic"}
    for r in rows:
        case = cases[r["prompt"]]
        got = extract_answer(r["response"], case.meta["answer_kind"])
        assert got is not None and got != case.meta["answer"], r


@pytest.mark.parametrize("name", redteam.NAMES)
def test_write_produces_jsonl_the_trainer_of_its_method_loads(name: str, tmp_path: Path) -> None:
    from aligner.training import load_dpo_jsonl, load_sft_jsonl

    path = redteam.write(name, tmp_path / "sub" / f"{name}.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == redteam.rows(name)
    loader = load_dpo_jsonl if redteam.METHOD[name] == "dpo" else load_sft_jsonl
    assert len(loader(path)) == len(lines)
