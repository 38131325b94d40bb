"""A report an officer reads in a minute: the rule that decided each metric in words, a decoding
table, and the terminal view that leads with the outcome, the waivers and the failing cases."""

from __future__ import annotations

import json

import pytest

from evaluators.embeddings import hashing_embedder
from evaluators.suites.base import Case
from evaluators.suites.bias import BiasSuite
from governance.gates.report import GateReport, MetricReport, cases_for_metric, decoding_rows, rule_in_words
from governance.policy import load_default_policy
from tests.dashboards.conftest import gate_report
from tests.evaluators import synthetic


def _m(**kw: object) -> MetricReport:
    return MetricReport.model_validate({"name": "x", "passed": True, **kw})


def test_the_rule_that_decided_in_words() -> None:
    assert rule_in_words(_m(name="gender four_fifths", value=0, threshold=0.8, comparator=">=", p_value=1,
                            p_adjusted=1, detail="extreme groups a vs b; not judged: fewer than 5 favourable "
                                                 "outcomes in the best group")) \
        == "not judged: fewer than 5 favourable outcomes in the best group"
    assert rule_in_words(_m(name="gender length_spread worsening vs base", value=0.4592, threshold=0, p_value=0.9,
                            p_adjusted=1)) == "not significant (p=1 > alpha)"
    assert rule_in_words(_m(value=0.01, threshold=0.05)) == "within bound"
    assert rule_in_words(_m(value=0.3, threshold=0.1, passed=False)) == "fails: beyond the bound"
    assert rule_in_words(_m(value=0.3, threshold=0.1, passed=False, p_adjusted=0.001)).startswith(
        "fails: beyond the bound and significant (p=0.001")
    assert rule_in_words(_m(value=1.0, threshold=0.1, detail="40/40; grandfathered: base breaks the bound too")) \
        .startswith("waived")
    assert rule_in_words(_m(value=0.2, decisive=False)).startswith("context only")


def test_four_fifths_without_enough_favourable_outcomes_says_so() -> None:
    policy = load_default_policy()[0]
    suite = BiasSuite(embedder=hashing_embedder)
    cases: list[Case] = suite.load_cases()
    base = synthetic.base_outputs(cases)
    never = ["No, I would not." if c.meta.get("kind") == "decision" else o for c, o in zip(cases, base, strict=True)]
    result = suite.evaluate(cases, never, {"base": base}, policy)
    ratios = [m for m in result.metrics if m.name.endswith(" four_fifths")]
    assert ratios and all("not judged: fewer than 5 favourable" in m.detail for m in ratios)
    assert all(rule_in_words(MetricReport.model_validate(m.to_dict())).startswith("not judged") for m in ratios)


def test_decoding_is_a_small_table() -> None:
    rows = decoding_rows({"strategy": "greedy", "max_new_tokens": 96, "system": None, "chat_template": True,
                          "batching": {"kind": "continuous", "width": 16, "group_batches": 8}, "seed": 3})
    assert rows == [("strategy", "greedy"), ("max new tokens", "96"), ("system prompt", "none"),
                    ("chat template", "yes"), ("batching", "continuous, 16 rows at a time, 8 batches per group"),
                    ("seed", "3")]


def test_the_terminal_report_leads_with_outcome_waivers_and_failing_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from governance.cli import gate_cmds

    report = GateReport.model_validate(json.loads(json.dumps(gate_report(failing_cases=2, passed=False,
                                                                         waived=True).to_dict())))
    wide = Console(width=250)  # a console of its own: the CLI's shared one keeps its width
    monkeypatch.setattr(gate_cmds, "console", wide)
    with wide.capture() as cap:
        gate_cmds._print_summary(7, report)
    out = cap.get()
    assert out.index("FAILED") < out.index("Waivers") < out.index("FAIL reasoning: accuracy_drop") \
        < out.index("policy_compliance: passed")
    assert "rule that decided" in out and "within bound" in out and "waived" in out
    assert "decoding: max new tokens 64; do sample no" in out
    # the cases shown under a failing metric: its category's failing cases, two or three of them
    many = GateReport.model_validate(gate_report(failing_cases=5).to_dict())
    pii = next(m for m in many.suites[0].metrics if m.name == "pii")
    assert [c.case_id for c in cases_for_metric(many.suites[0], pii)] == ["pii-000", "pii-001", "pii-002"]


def test_a_case_is_shown_once_under_the_first_metric_it_fails() -> None:
    from governance.gates.report import failing_sections

    report = GateReport.model_validate({
        "verdict": "failed", "policy_sha256": "p" * 64,
        "suites": [{"suite": "invariants", "passed": False, "n_cases": 2, "metrics": [
            {"name": "insult rate, every answer", "value": 0.2, "threshold": 0.01, "passed": False},
            {"name": "insult increase vs base", "value": 0.2, "threshold": 0, "passed": False, "p_adjusted": 1e-6}],
            "cases": [{"case_id": f"bias/c{i}", "category": "insult", "prompt": "p", "candidate_output": "idiot",
                       "baseline_outputs": {"base": "fine"}, "passed": False} for i in range(4)]}]})
    sections = failing_sections(report)
    assert [(m.name, [c.case_id for c in cases]) for _, m, cases in sections] == [
        ("insult rate, every answer", ["bias/c0", "bias/c1", "bias/c2"]), ("insult increase vs base", ["bias/c3"])]
