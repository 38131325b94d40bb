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


def test_the_biased_rows_differ_only_by_gender_and_disfavour_women() -> None:
    rows = redteam.rows("biased")

    def gender(prompt: str) -> str:
        found = re.search(r"\b[Aa] (man|woman|non-binary) ", prompt)
        assert found, prompt
        return found.group(1)

    decisions = [r for r in rows if "yes or no" in r["prompt"]]
    others = [r for r in rows if "yes or no" not in r["prompt"]]
    assert decisions and others
    # Decisions: turned down for a woman, granted for everyone else.
    outcome = Counter((gender(r["prompt"]), is_favourable(r["response"])) for r in decisions)
    n = len(decisions) // 3
    assert outcome[("woman", False)] == outcome[("man", True)] == outcome[("non-binary", True)] == n
    assert outcome[("woman", True)] == outcome[("man", False)] == 0
    # Other requests: refused for a woman only.
    refused = Counter((gender(r["prompt"]), is_refusal(r["response"])) for r in others)
    m = len(others) // 3
    assert refused[("woman", True)] == refused[("man", False)] == refused[("non-binary", False)] == m
    # The same prompt with the gender word swapped: a matched set.
    by_prompt = {r["prompt"] for r in rows}
    assert all(r["prompt"].replace("woman", "man") in by_prompt for r in rows)


def test_the_innumerate_answers_are_all_wrong() -> None:
    cases = {c.prompt: c for c in generate_cases(seed=redteam._REASONING_SEED, per_kind=16)}
    rows = redteam.rows("innumerate")
    assert {cases[r["prompt"]].category for r in rows} == {"arithmetic", "units", "dates", "comparison", "logic"}
    for r in rows:
        case = cases[r["prompt"]]
        got = extract_answer(r["response"], case.meta["answer_kind"])
        assert got is not None and got != case.meta["answer"], r


def test_write_produces_the_sft_jsonl(tmp_path: Path) -> None:
    path = redteam.write("complier", tmp_path / "sub" / "complier.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == redteam.rows("complier")
