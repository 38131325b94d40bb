"""The printable gate report: one self-contained HTML page rendered from the typed ``GateReport``.

Inline CSS, no scripts and no external assets, so the page can be saved as evidence,
served under a sandboxing CSP (``/ui/versions/{id}/gate-report``) or written by
``govern gate report --html`` and the benchmarks. It reads only the report contract
(``governance.gates.report``) and shows numbers with its ``format_number``.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, select_autoescape

from governance.gates.report import GateReport, format_number

TEMPLATE = Path(__file__).resolve().parent / "templates" / "gate_report.html"
MAX_CASES_PER_SUITE = 50

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_env.filters["num"] = format_number


def render_html(report: GateReport, *, title: str = "Gate report", max_cases: int = MAX_CASES_PER_SUITE) -> str:
    """The report as one HTML page: verdict, digests, suites, metrics and the first failing cases."""
    template = _env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(report=report, title=title, max_cases=max_cases)
