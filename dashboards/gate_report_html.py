"""The printable gate report: one self-contained HTML page rendered from the typed ``GateReport``.

Inline CSS, no scripts and no external assets, so the page can be saved as evidence,
served under a sandboxing CSP (``/ui/versions/{id}/gate-report``) or written by
``govern gate report --html`` and the benchmarks. It reads only the report contract
(``governance.gates.report``) and shows numbers with its ``format_number``.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, select_autoescape

from governance.gates.report import GateReport, decoding_rows, failing_sections, format_number, rule_in_words

TEMPLATE = Path(__file__).resolve().parent / "templates" / "gate_report.html"
MAX_CASES_PER_SUITE = 50

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_env.filters["num"] = format_number
_env.filters["rule"] = rule_in_words
_env.globals.update(failing_sections=failing_sections, decoding_rows=decoding_rows)


def render_html(report: GateReport, *, title: str = "Gate report", max_cases: int = MAX_CASES_PER_SUITE) -> str:
    """The report as one HTML page, in the order an officer reads it.

    Verdict (with "passed with waivers"), the waivers, each failing metric with two or
    three of its failing cases beside the baselines' answers, then the digests, a
    decoding table and every suite's metrics (rounded, with the rule that decided each).
    """
    template = _env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(report=report, title=title, max_cases=max_cases)
