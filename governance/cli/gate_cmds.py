"""``govern gate run VERSION`` (the gate in the foreground, with a progress bar) and
``govern gate report VERSION [--html FILE] [--json]`` (the latest gate run's report).

Both talk to the database directly: the run is the same unit of work the Celery task
``evaluators.run_gate`` performs (its transitions are audited as ``system:gate``), and a
report is read-only (``governance.gates.service``; the page is ``dashboards.gate_report_html``).
The CLI is a composition root, so it may import the evaluators and the dashboards.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dashboards.gate_report_html import render_html
from governance.cli.common import clear_errors, console, fail
from governance.db import unit_of_work
from governance.deployments import service as deployments
from governance.errors import DomainError
from governance.gates.report import GateReport, decoding_rows, failing_sections, format_number, rule_in_words
from governance.gates.service import latest_gate_run, latest_report, load_gate_report
from governance.principal import Principal
from governance.registry import service as registry

gate_app = typer.Typer(help="Run and report the evaluation gate.", no_args_is_help=True)


@gate_app.command("run")
@clear_errors
def run_cmd(
    version: int = typer.Argument(..., help="a submitted version id (with --deployment: any gated version)"),
    html: Path | None = typer.Option(None, "--html", help="also write the HTML report here"),
    deployment: str | None = typer.Option(
        None, "--deployment",
        help="gate an existing version again under this deployment's current gate policy (a new run beside the old)"),
) -> None:
    """Run the gate of VERSION now, in this process (generation on this machine).

    With --deployment, re-gate: the version (approved, active, superseded, rolled back or
    gate-passed) is evaluated under the deployment's current gate policy as a new gate run;
    a compliance officer then approves it under that policy (`govern review approve`)."""
    from evaluators.tasks import run_gate_for_version, run_regate  # defers torch, scipy and pandas (the gate)

    run_id = _request_regate(version, deployment) if deployment is not None else None

    with Progress(TextColumn("[bold]gate[/] v{task.fields[version]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("outputs"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("generate", total=None, version=version)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            out = (run_regate(run_id, progress=progress) if run_id is not None
                   else run_gate_for_version(version, progress=progress))
        except DomainError as exc:
            fail(str(exc))
    if "skipped" in out:
        fail(f"version {version}: nothing to do ({out['skipped']}); the gate runs on submitted versions; to gate "
             f"an existing version under a deployment's current gate policy add `--deployment NAME`", code=1)
    outcome = out.get("outcome") or out["verdict"]
    colour = "red" if out["verdict"] != "passed" else ("yellow" if out.get("waivers") else "green")
    console.print(f"[bold {colour}]{outcome.upper()}[/] version {version}  "
                  f"evidence {out['evidence_digest'][:16]}...", highlight=False)
    if out.get("waivers"):
        console.print(f"waivers (bounds the bare base model breaks too, not enforced): {', '.join(out['waivers'])}; "
                      f"an approval must acknowledge each (`govern gate report {version}` says why)",
                      highlight=False)
    if out["failing_suites"]:
        console.print(f"failing suites: {', '.join(out['failing_suites'])}", highlight=False)
    if html is not None:
        _write_html(version, html)
    if run_id is not None and out["verdict"] == "passed":
        acks = "".join(f" --acknowledge {w!r}" if " " in w else f" --acknowledge {w}" for w in out.get("waivers", []))
        console.print(f"gate run {run_id} under {deployment!r}'s gate policy passed; a compliance officer approves "
                      f"it for that policy: `govern review approve {version} --comment TEXT{acks}`", highlight=False)
    if out["verdict"] != "passed":
        raise typer.Exit(1)


def _request_regate(version: int, deployment: str) -> int:
    """Open a queued re-gate run (audited, actor system:gate) that this process then runs."""
    try:
        with unit_of_work() as s:
            run = registry.request_regate(s, version_id=version, principal=Principal.for_system("gate"),
                                          target=deployments.regate_target(s, name=deployment))
            return run.id
    except DomainError as exc:
        fail(str(exc))


@gate_app.command("report")
@clear_errors
def report_cmd(
    version: int = typer.Argument(..., help="a version id"),
    html: Path | None = typer.Option(None, "--html", help="write the full HTML report (verdict, metrics, cases)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
) -> None:
    """Show the latest gate run of VERSION: verdict first, then each suite's metrics."""
    with unit_of_work() as s:
        run = latest_gate_run(s, version_id=version)
        if run is None:
            fail(f"version {version} has no gate run yet (submit it, or run `govern gate run {version}`)")
        if run.status not in ("passed", "failed"):
            fail(f"the latest gate run of version {version} is {run.status}"
                 + (f": {run.error}" if run.error else ""))
        report = load_gate_report(s, gate_run=run)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_summary(version, report)
    if html is not None:
        _write_report_html(version, report, html)


def _print_summary(version: int, report: GateReport) -> None:
    """Verdict, waivers, each failing metric with a few failing cases beside the baseline's, then the tables."""
    colour = "red" if not report.passed else ("yellow" if report.waivers else "green")
    console.print(f"[bold {colour}]{report.outcome.upper()}[/] version {version}", highlight=False)
    console.print(f"evidence {report.evidence_digest}  policy {report.policy_sha256[:16]}...", highlight=False)
    if report.waivers:
        table = Table(title="Waivers: bounds the bare base model breaks too (not enforced; acknowledge each "
                            "to approve)", title_justify="left")
        for col in ("name", "suite", "bound", "base", "candidate", "why"):
            table.add_column(col)
        for w in report.waivers:
            bound = "—" if w.bound is None else f"{w.comparator} {format_number(w.bound)}"
            table.add_row(w.name, w.suite, bound, format_number(w.base_value), format_number(w.candidate_value),
                          w.reason)
        console.print(table)
    for suite, m, cases in failing_sections(report):
        console.print(f"[bold red]FAIL[/] {suite.suite}: {m.name} = {format_number(m.value)} "
                      f"({rule_in_words(m)})", highlight=False)
        for c in cases:
            console.print(f"  case {c.case_id}: {_short(c.prompt, 100)}", highlight=False)
            console.print(f"    candidate: {_short(c.candidate_output, 160)}", highlight=False)
            for name, text in c.baseline_outputs.items():
                console.print(f"    {name:>9}: {_short(text, 160)}", highlight=False)
    for suite in report.suites:
        table = Table(title=f"{suite.suite}: {'passed' if suite.passed else 'FAILED'} ({suite.n_cases} cases)",
                      title_justify="left")
        for col in ("metric", "value", "threshold", "p (corr.)", "n", "result", "rule that decided"):
            table.add_column(col)
        for m in suite.metrics:
            if not m.decisive and m.passed and not m.name.startswith(("candidate", "minimum")):
                continue  # keep the terminal view short; the HTML and JSON carry every metric
            threshold = "—" if m.threshold is None else f"{m.comparator} {format_number(m.threshold)}"
            result = "pass" if m.passed else "[red]FAIL[/]"
            if not m.decisive:
                result = "reported"
            elif m.passed and "grandfathered" in (m.detail or ""):
                result = "[yellow]waived[/]"
            table.add_row(m.name, format_number(m.value), threshold, format_number(m.p_adjusted), str(m.n), result,
                          rule_in_words(m))
        console.print(table)
        failing = suite.failing_cases()
        if failing:
            console.print(f"  {len(failing)} failing cases, e.g. {', '.join(c.case_id for c in failing[:5])}",
                          highlight=False)
    fvk = report.form_vs_knowledge
    if fvk:
        console.print(f"form vs knowledge: {fvk.get('reading', '')}", highlight=False)
    if report.decoding:
        console.print("decoding: " + "; ".join(f"{k} {v}" for k, v in decoding_rows(report.decoding)),
                      highlight=False)


def _short(text: str, limit: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _write_html(version: int, path: Path) -> None:
    with unit_of_work() as s:
        report = latest_report(s, version_id=version)
    if report is None:
        fail(f"version {version} has no finished gate run")
    _write_report_html(version, report, path)


def _write_report_html(version: int, report: GateReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, title=f"Gate report: version {version}"), encoding="utf-8")
    console.print(f"wrote {path}", highlight=False)
