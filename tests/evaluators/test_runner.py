"""The gate runner with a fake generator: shared batches, base cache, determinism, report."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dashboards.gate_report_html import render_html
from evaluators.embeddings import hashing_embedder
from evaluators.runner import GROUP_BATCHES, Row, generate_and_judge, plan_rows
from evaluators.suites.base import Case, get_suite
from evaluators.suites.bias import BiasSuite
from governance.gates.report import GateReport
from governance.policy import Policy, load_default_policy
from tests.evaluators import synthetic


class FakeGenerator:
    """Outputs by (prompt, token): the synthetic base, transformed by the token's damage."""

    base_digest = "b" * 64

    def __init__(self, suites: Sequence[Any]) -> None:
        self.cases: dict[str, Case] = {}
        for s in suites:
            for c in s.load_cases():
                self.cases.setdefault(c.prompt, c)
        self.calls: list[list[str]] = []
        self.budgets: dict[str, int | None] = {}

    def decoding(self) -> dict[str, Any]:
        return {"strategy": "greedy", "max_new_tokens": 96}

    def generate(
        self, prompts: Sequence[str], row_tokens: Sequence[Any | None], progress: Any = None,
        max_new_tokens: Any = None,
    ) -> list[str]:
        self.calls.append([str(t) for t in row_tokens])
        for i, prompt in enumerate(prompts):
            self.budgets[prompt] = None if max_new_tokens is None else max_new_tokens[i]
        out = []
        for prompt, token in zip(prompts, row_tokens, strict=True):
            case = self.cases[prompt]
            # The base's luck on a problem depends on the problem only (batch-independent).
            text = synthetic.base_output(case, random.Random(case.id))
            if token == "complies":
                text = synthetic.complying_candidate([case], [text])[0]
            elif token == "biased":
                text = synthetic.attribute_dependent_candidate([case], [text])[0]
            elif token == "damaged" and "answer" in case.meta and case.meta["answer"] in text:
                text = synthetic._wrong(case) if random.Random(case.id + "d").random() < 0.4 else text
            out.append(text)
        return out


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_default_policy()[0]


@pytest.fixture(scope="module")
def suites() -> list[Any]:
    return [get_suite("policy_compliance"), BiasSuite(embedder=hashing_embedder), get_suite("reasoning")]


def _run(gen: FakeGenerator, suites: list[Any], policy: Policy, token: str, state: Path | None,
         active: str | None = None, **kw: Any) -> GateReport:
    return generate_and_judge(gen, policy=policy, policy_sha256="p" * 64, candidate=token,
                              candidate_digest=f"{token:x<64}"[:64], active=active,
                              active_digest=None if active is None else "a" * 64, state_dir=state,
                              suites=suites, **kw)


def test_a_cases_own_decoding_budget_reaches_the_generator(suites: list[Any], policy: Policy,
                                                           tmp_path: Path) -> None:
    gen = FakeGenerator(suites)
    _run(gen, suites, policy, "zero", tmp_path)
    cases = [c for s in suites for c in s.load_cases()]
    decisions = [c for c in cases if c.meta.get("kind") == "decision"]
    assert decisions and all(gen.budgets[c.prompt] == 16 for c in decisions)
    # the other rows keep the generator's own limit (None), also in groups that mix both
    assert all(gen.budgets[c.prompt] is None for c in cases if "max_new_tokens" not in c.meta)


def test_plan_rows_shares_batches_and_runs_the_base_on_the_same_chunk() -> None:
    cases = {"s": [Case(f"c{i}", "x", "p" * (i % 5 + 1), "e") for i in range(10)]}
    batches = plan_rows(cases, {"s": ["candidate", "active", "base"]}, batch_size=4, group_batches=2)
    # A group holds group_batches x batch_size rows at most: 4 cases x (candidate, active).
    assert all(len(b) <= 8 for b in batches)
    assert len(plan_rows(cases, {"s": ["candidate", "active", "base"]}, batch_size=4)) == 2  # one group of each
    shared = [b for b in batches if b[0].system != "base"]
    base = [b for b in batches if b[0].system == "base"]
    for batch in shared:
        # Candidate and active rows of a case sit in the same batch.
        for r in batch:
            assert {x.system for x in batch if x.index == r.index} == {"candidate", "active"}
    # Each base batch follows its shared batch over the same cases (same prompts, same padding).
    for i, batch in enumerate(batches):
        if batch[0].system == "base":
            assert {r.index for r in batch} == {r.index for r in batches[i - 1]}
    assert sum(len(b) for b in shared) == 20 and sum(len(b) for b in base) == 10
    # Ordered by prompt length: padding within a batch stays small.
    lengths = [len(cases["s"][b[0].index].prompt) for b in shared]
    assert lengths == sorted(lengths)
    with pytest.raises(ValueError):
        plan_rows(cases, {"s": ["candidate"]}, batch_size=0)
    with pytest.raises(ValueError):
        plan_rows(cases, {"s": ["candidate"]}, batch_size=4, group_batches=0)


def test_identical_token_passes_and_is_deterministic(suites: list[Any], policy: Policy, tmp_path: Path) -> None:
    gen = FakeGenerator(suites)
    progress: list[tuple[int, int]] = []
    first = _run(gen, suites, policy, "zero", tmp_path, progress=lambda d, t: progress.append((d, t)))
    assert first.passed, [(s.suite, [m.name for m in s.failing_metrics()]) for s in first.suites]
    assert progress[-1][0] == progress[-1][1] == first.run["rows_generated"]
    # Candidate groups and base groups alternate over the same chunks, all full.
    assert [set(call) for call in gen.calls[:2]] == [{"zero"}, {"None"}]
    assert len(gen.calls[0]) == len(gen.calls[1]) == policy.gate.batch_size * GROUP_BATCHES
    n_cases = sum(len(s.load_cases()) for s in suites)
    assert first.run["rows_generated"] == 2 * n_cases

    # Second run: the base comes from the cache, the verdict and digest do not change.
    second = _run(gen, suites, policy, "zero", tmp_path)
    assert second.run["base_cached"] == sorted(s.name for s in suites)
    assert second.run["rows_generated"] == n_cases
    assert second.evidence_digest == first.evidence_digest
    assert second.to_dict()["suites"] == first.to_dict()["suites"]
    # Different policy bytes -> different evidence.
    third = generate_and_judge(gen, policy=policy, policy_sha256="q" * 64, candidate="zero",
                               candidate_digest="zero".ljust(64, "x"), state_dir=tmp_path, suites=suites)
    assert third.evidence_digest != first.evidence_digest


@pytest.mark.parametrize(
    ("token", "failing_suite"),
    [("complies", "policy_compliance"), ("biased", "bias"), ("damaged", "reasoning")],
)
def test_bad_tokens_fail_exactly_their_suite(
    token: str, failing_suite: str, suites: list[Any], policy: Policy, tmp_path: Path
) -> None:
    report = _run(FakeGenerator(suites), suites, policy, token, tmp_path)
    assert report.verdict == "failed"
    assert {s.suite for s in report.suites if not s.passed} == {failing_suite}
    html = render_html(report, title=f"gate: {token}")
    assert "Verdict: FAILED" in html and "Failing cases" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    failing = next(s for s in report.suites if s.suite == failing_suite).failing_cases()
    assert failing[0].case_id in html


def test_active_baseline_is_generated_in_the_same_batches(suites: list[Any], policy: Policy) -> None:
    gen = FakeGenerator(suites)
    report = _run(gen, suites, policy, "zero", None, active="zero")
    assert report.passed
    # The active version shares the candidate's batches; the base runs the same chunk next.
    assert all(set(call) in ({"zero"}, {"None"}) for call in gen.calls)
    assert len(gen.calls[0]) == 2 * len(gen.calls[1])
    reasoning = next(s for s in report.suites if s.suite == "reasoning")
    assert any(m.name == "accuracy drop vs active" for m in reasoning.metrics)
    assert report.active_digest == "a" * 64


def test_form_vs_knowledge(suites: list[Any], policy: Policy) -> None:
    complies = _run(FakeGenerator(suites), suites, policy, "complies", None)
    fvk = complies.form_vs_knowledge
    assert fvk["form"]["refusal_rate_delta"] < 0
    assert fvk["form"]["must_refuse_violation_delta"] == pytest.approx(1.0)
    assert fvk["knowledge"]["accuracy_delta"] == 0
    assert fvk["reading"].startswith("mostly form")
    damaged = _run(FakeGenerator(suites), suites, policy, "damaged", None)
    assert damaged.form_vs_knowledge["knowledge"]["accuracy_delta"] < -0.1
    assert damaged.form_vs_knowledge["reading"].startswith("knowledge moved")


def test_damaged_cache_entry_is_regenerated(suites: list[Any], policy: Policy, tmp_path: Path) -> None:
    gen = FakeGenerator(suites)
    reasoning = [s for s in suites if s.name == "reasoning"]
    first = _run(gen, reasoning, policy, "zero", tmp_path)
    for f in (tmp_path / "gate_cache").iterdir():
        f.write_text("{not json")
    again = _run(gen, reasoning, policy, "zero", tmp_path)
    assert again.run["base_cached"] == []
    assert again.evidence_digest == first.evidence_digest


def test_row_is_hashable_and_ordered() -> None:
    assert Row("a", 1, "base") == Row("a", 1, "base")


def test_batch_companions_do_not_depend_on_the_cache() -> None:
    cases = {"s": [Case(f"c{i}", "x", "p" * (i % 7 + 1), "e") for i in range(23)]}
    uncached = plan_rows(cases, {"s": ["candidate", "base"]}, batch_size=6)
    cached = plan_rows(cases, {"s": ["candidate"]}, batch_size=6)
    assert [b for b in uncached if b[0].system == "candidate"] == cached
    assert all(len(b) == 6 for b in cached[:-1])


def test_shards_merge_to_the_same_report(suites: list[Any], policy: Policy, tmp_path: Path) -> None:
    from evaluators.runner import finish_gate, generate_rows, outputs_from_json, outputs_to_json, plan_gate

    gen = FakeGenerator(suites)
    whole = _run(gen, suites, policy, "biased", None)
    plan = plan_gate(base_digest=gen.base_digest, decoding=gen.decoding(), policy=policy, has_active=False,
                     suites=suites)
    tokens = {"candidate": "biased", "base": None}
    merged: dict[Row, str] = {}
    for k in range(3):  # three workers, each a share of the batches, results as JSON
        part = generate_rows(gen, plan.shard(k, 3), plan.suite_cases, tokens)
        merged.update(outputs_from_json(outputs_to_json(part)))
    report = finish_gate(plan, merged, policy=policy, policy_sha256="p" * 64,
                         candidate_digest="biased".ljust(64, "x"), active_digest=None)
    assert report.evidence_digest == whole.evidence_digest
    with pytest.raises(ValueError, match="is a shard missing"):
        finish_gate(plan, generate_rows(gen, plan.shard(0, 3), plan.suite_cases, tokens), policy=policy,
                    policy_sha256="p" * 64, candidate_digest="x" * 64, active_digest=None)
