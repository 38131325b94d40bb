"""The typed gate-report contract: a real report round-trips, stored JSON reads back, numbers read well."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from dashboards.gate_report_html import render_html
from evaluators.embeddings import hashing_embedder
from evaluators.runner import build_report, evidence_digest, generate_and_judge
from evaluators.suites.base import get_suite
from evaluators.suites.bias import BiasSuite
from governance.gates.report import GateReport, ReportUnreadable, format_number, read_summary
from governance.policy import Policy, load_default_policy
from tests.evaluators import synthetic
from tests.evaluators.test_runner import FakeGenerator


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_default_policy()[0]


@pytest.fixture(scope="module")
def report(policy: Policy, tmp_path_factory: pytest.TempPathFactory) -> GateReport:
    """A report of the real runner on synthetic outputs (a token that answers disallowed requests)."""
    suites: list[Any] = [get_suite("policy_compliance"), BiasSuite(embedder=hashing_embedder), get_suite("reasoning")]
    cases = {s.name: s.select_cases(s.load_cases(), 60) for s in suites}
    return generate_and_judge(FakeGenerator(suites), policy=policy, policy_sha256="p" * 64, candidate="complies",
                              candidate_digest="c" * 64, active="zero", active_digest="a" * 64,
                              state_dir=tmp_path_factory.mktemp("state"), suites=suites, cases=cases)


def test_a_real_report_round_trips_through_json(report: GateReport) -> None:
    assert report.verdict == "failed" and {s.suite for s in report.suites if not s.passed} == {"policy_compliance"}
    text = json.dumps(report.to_dict())
    back = GateReport.model_validate(json.loads(text))
    assert back == report and back.to_dict() == report.to_dict()
    assert evidence_digest(back.evidence()) == report.evidence_digest
    assert list(report.to_dict())[:2] == ["verdict", "evidence_digest"] and report.to_dict()["schema"] == 1
    # ints stay ints (the canonical encoding, hence the digest, tells 0 from 0.0)
    metric = next(m for s in back.suites for m in s.metrics)
    assert isinstance(metric.n, int) and report.run["rows_generated"] > 0


def test_the_stored_summary_reads_back(report: GateReport) -> None:
    stored = json.loads(json.dumps(report.stored_summary().model_dump(mode="json")))
    summary = read_summary(stored)
    assert summary.verdict == "failed" and summary.evidence_digest == report.evidence_digest
    compliance = summary.suites["policy_compliance"]
    assert not compliance.passed and compliance.failing_cases == len(report.suites[0].failing_cases()) > 0
    assert compliance.metrics == report.suites[0].metrics and "categories" in summary.details["policy_compliance"]
    assert read_summary({}).suites == {} and read_summary(None).verdict is None  # a running gate's row


def test_summaries_stored_before_waivers_read_as_having_none(report: GateReport) -> None:
    stored = json.loads(json.dumps(report.stored_summary().model_dump(mode="json")))
    assert stored["waivers"] == []
    del stored["waivers"]  # what a runner before waivers wrote
    old = read_summary(stored)
    assert old.waivers == [] and old.outcome == old.verdict == "failed"
    # a report without waivers hashes as it did before they were listed (no empty key in the evidence)
    assert "waivers" not in report.evidence() and report.to_dict()["waivers"] == []
    assert report.to_dict()["outcome"] == "failed"
    passed = read_summary({**stored, "verdict": "passed"})
    assert passed.outcome == "passed"
    waived = read_summary({**stored, "verdict": "passed", "waivers": [
        {"name": "must_refuse", "suite": "policy_compliance", "metric": "must_refuse violation rate",
         "bound": 0.1, "base_value": 1.0, "candidate_value": 1.0, "reason": "the base breaks it too"}]})
    assert waived.outcome == "passed with waivers" and waived.waivers[0].comparator == "<="
    with pytest.raises(ReportUnreadable, match="waivers"):
        read_summary({**stored, "waivers": [{"name": "x"}]})


def test_a_summary_off_the_contract_is_refused_by_name(report: GateReport) -> None:
    stored = report.stored_summary().model_dump(mode="json")
    stored["suites"]["bias"]["metrics"][0]["pvalue"] = 0.5
    with pytest.raises(ReportUnreadable, match=r"gate run 7: .*suites\.bias\.metrics\.0\.pvalue"):
        read_summary(stored, source="gate run 7")
    with pytest.raises(ReportUnreadable, match="verdict"):
        read_summary({"verdict": "green"})


def test_the_runner_validates_what_the_suites_write(policy: Policy) -> None:
    suite = get_suite("reasoning")
    cases = suite.load_cases()[:10]
    outputs = synthetic.base_outputs(cases)
    result = suite.evaluate(cases, outputs, {"base": outputs}, policy)
    report = build_report([result], policy_sha256="p" * 64, candidate_digest="c" * 64, active_digest=None,
                          base_digest="d" * 64, decoding={"strategy": "greedy", "max_new_tokens": 8, "seed": 3})
    assert report.decoding["seed"] == 3  # another generator's settings are kept (they are evidence)
    broken = result.to_dict() | {"score": 1.0}
    with pytest.raises(ValueError, match="score"):
        GateReport.model_validate({**report.to_dict(), "suites": [broken]})


def test_the_page_renders_from_the_model(report: GateReport) -> None:
    html = render_html(GateReport.model_validate(json.loads(json.dumps(report.to_dict()))), title="t")
    assert "Verdict: FAILED" in html and "Failing cases" in html and report.evidence_digest in html
    assert "<script" not in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "—"), (math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf"), (True, "yes"), (False, "no"),
        (0, "0"), (3, "3"), (0.0, "0"), (0.5, "0.5"), (0.123456, "0.1235"), (1.2e-05, "1.20e-05"),
        (3e-300, "3.00e-300"), (0.001, "0.001"), ((0.006, 0.07), "[0.006, 0.07]"), ([math.nan, 1.0], "[NaN, 1]"),
        ("ok", "ok"),
    ],
)
def test_one_number_formatter(value: Any, shown: str) -> None:
    assert format_number(value) == shown


def test_html_report_template_lives_with_the_dashboards() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "dashboards" / "templates" / "gate_report.html").exists()
    assert not (root / "evaluators" / "templates" / "gate_report.html").exists()
