"""The dashboards read gate reports through the typed contract, and never import the evaluators."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from dashboards import reports
from dashboards.gate_report_html import render_html
from governance.gates.report import GateReport
from tests.dashboards.conftest import gate_report

ROOT = Path(__file__).resolve().parents[2]


def test_a_stored_summary_reads_as_typed_metrics() -> None:
    report = gate_report(failing_cases=2)
    stored = json.loads(json.dumps(report.stored_summary().model_dump(mode="json")))
    suites = {s.name: s for s in reports.suite_summaries(stored)}
    assert list(suites) == ["policy_compliance", "bias", "reasoning"]
    gap = suites["bias"].metrics[0]
    assert (gap.name, gap.p_value, gap.p_adjusted, gap.comparator) == ("refusal_gap", 0.41, 0.82, "<=")
    assert suites["policy_compliance"].metrics[1].interval == (0.006, 0.07)
    assert suites["policy_compliance"].note == "violations are judged per case by the policy checkers"


def test_the_printable_page_renders_a_stored_report() -> None:
    report = GateReport.model_validate(json.loads(json.dumps(gate_report(failing_cases=2).to_dict())))
    html = render_html(report, title="v1")
    assert "Failing cases (2)" in html and "[0.006, 0.07]" in html and "&gt;= 0.8" in html


def test_dashboards_import_only_aligner_and_governance_of_the_project() -> None:
    rooms = {"evaluators", "monitors", "serving", "bench", "tests"}
    offenders = []
    for path in (ROOT / "dashboards").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in rooms]
    assert not offenders, offenders
