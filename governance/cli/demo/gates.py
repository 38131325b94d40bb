"""Step 3 of the demo: the evaluation gate judges the three versions, the bad one must fail, and
each version's gate evidence is written as HTML (the page `govern gate report --html` writes)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dashboards.gate_report_html import render_html
from governance.cli.demo.state import DemoFailed, DemoState, say, wait_for
from governance.client import GovernClient
from governance.db import get_engine, unit_of_work
from governance.gates.service import latest_report
from governance.registry.models import VersionState

TERMINAL = {VersionState.gate_passed.value, VersionState.gate_failed.value}


def wait_for_gates(st: DemoState) -> None:
    with st.client(st.users.officer) as off:
        _wait_for_verdicts(st, off)
        for key, vid in st.versions.items():
            view = off.request("GET", f"/v1/versions/{vid}/gate")
            runs = view.get("runs") or []
            st.gate[key] = {"state": view["state"], **(runs[0] if runs else {})}
    _print_verdicts(st)
    states = {k: g["state"] for k, g in st.gate.items()}
    st.numbers["gate"] = states
    if states["house"] != "gate_passed" or states["safer"] != "gate_passed":
        raise DemoFailed(f"a good token did not pass the gate: {states}")
    if states["bad"] != "gate_failed":
        raise DemoFailed(f"the bad token was not failed by the gate: {states['bad']}")
    _explain_bad_token(st)
    _write_gate_reports(st)
    st.numbers["gate_seconds"] = {
        k: g.get("summary", {}).get("run", {}).get("total_seconds") for k, g in st.gate.items()
    }


def _wait_for_verdicts(st: DemoState, off: GovernClient) -> None:
    """Poll every version's state, with a progress bar, until each one is judged."""
    with Progress(
        TextColumn("  gate"), BarColumn(), TextColumn("{task.completed}/{task.total} versions judged"),
        TimeElapsedColumn(), console=st.console,
    ) as bar:
        task = bar.add_task("gates", total=len(st.versions))

        def judged() -> bool:
            states = {k: off.version(v)["state"] for k, v in st.versions.items()}
            bar.update(task, completed=sum(s in TERMINAL for s in states.values()))
            return all(s in TERMINAL for s in states.values())

        wait_for("the gate verdicts", judged, timeout=2400 if not st.fast else 1500, interval=3)


def _print_verdicts(st: DemoState) -> None:
    table = Table("version", "token", "state", "suites", box=None)
    for key, vid in st.versions.items():
        g = st.gate[key]
        suites = g.get("summary", {}).get("suites", {})
        cells = ", ".join(f"{name}: {'pass' if s['passed'] else 'FAIL'}" for name, s in suites.items())
        table.add_row(str(vid), key, g["state"], cells or str(g.get("error") or "-"))
    st.console.print(table)


def _explain_bad_token(st: DemoState) -> None:
    """Name the first failing metrics of each suite the bad token failed."""
    for name, s in st.gate["bad"].get("summary", {}).get("suites", {}).items():
        if not s["passed"]:
            failing = [m for m in s.get("metrics", []) if m.get("passed") is False]
            why = "; ".join(_metric_line(m) for m in failing[:3])
            say(st, f"bad token fails [bold]{name}[/]: {why or s.get('notes')}")


def _metric_line(m: dict[str, Any]) -> str:
    return f"{m.get('name')} = {m.get('value')}" + (
        f" (threshold {m.get('threshold')})" if m.get("threshold") is not None else " (must hold)"
    )


def _write_gate_reports(st: DemoState) -> None:
    """Each version's gate evidence as HTML (the same page as `govern gate report --html`)."""
    out = st.work / "reports"
    out.mkdir(parents=True, exist_ok=True)
    for key, vid in st.versions.items():
        with unit_of_work(get_engine()) as s:
            report = latest_report(s, version_id=vid)
        if report is None:
            continue
        path = out / f"gate-version-{vid}-{key}.html"
        path.write_text(render_html(report, title=f"Gate report: version {vid} ({key})"), encoding="utf-8")
    st.numbers["gate_reports"] = str(out)
