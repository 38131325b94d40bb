"""The demo's story as its ordered steps (`run`), and the summary at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from governance.cli.demo.audit import audit_export_verify
from governance.cli.demo.dossiers import write_dossiers
from governance.cli.demo.gates import wait_for_gates
from governance.cli.demo.people import create_users
from governance.cli.demo.processes import ensure_replicas, start_processes
from governance.cli.demo.review import review_and_promote
from governance.cli.demo.servers import prepare_model, setup
from governance.cli.demo.shadow import shadow_before_promotion
from governance.cli.demo.state import DEMO_DB, DEPLOYMENT, DemoState, say, step
from governance.cli.demo.tokens import train_and_submit
from governance.cli.demo.traffic import traffic_and_rollback
from governance.cli.procs import ProcessGroup, supervise
from governance.settings import get_settings


def run(
    *, fast: bool, keep_running: bool, db_name: str = DEMO_DB, console: Console | None = None,
    until: int | None = None,
) -> dict[str, Any]:
    """Tell the story up to step ``until``; everything started is stopped at the end or on SIGINT/SIGTERM.

    The one `ProcessGroup` owns the subprocesses and, when the demo started them, the embedded
    PostgreSQL and Redis; on a signal `supervise` stops them all and raises `Interrupted`.
    With ``keep_running`` the services stay up after the story until the demo is interrupted.
    """
    console = console or Console()
    settings = get_settings()
    state_dir = settings.ensure_state_dir()
    work = state_dir / "demo"
    st = DemoState(fast=fast, db_name=db_name, state_dir=state_dir, work=work, console=console)
    st.procs = ProcessGroup(work / "logs")
    t0 = time.monotonic()
    with supervise(st.procs):
        tell(st, LAST_STEP if until is None else until)
        ensure_replicas(st)  # a story stopped early (--until) still ends with every process up
        st.numbers["total_seconds"] = round(time.monotonic() - t0)
        summary(st, keep_running)
        if keep_running:
            while True:  # until SIGINT/SIGTERM
                time.sleep(1)
        return {"versions": st.versions, "numbers": st.numbers, "env": st.env}


def _setup(st: DemoState) -> None:
    setup(st)
    prepare_model(st)


def _audit_and_dossiers(st: DemoState) -> None:
    audit_export_verify(st)
    write_dossiers(st)


def _people_and_processes(st: DemoState) -> None:
    create_users(st)
    start_processes(st)


STEPS: list[tuple[str, Callable[[DemoState], None]]] = [
    ("setup: embedded PostgreSQL + Redis, fresh demo database, base model", _setup),
    ("three users: an ML engineer, a compliance officer, an auditor", _people_and_processes),
    ("train two good token versions and one bad one, submit all three", train_and_submit),
    ("the evaluation gate", wait_for_gates),
    ("four-eyes review and promotion", review_and_promote),
    ("shadow before promotion: the approved version decoded beside the active one",
     shadow_before_promotion),
    ("promotion anyway, production traffic, drift, automatic rollback", traffic_and_rollback),
    ("the auditor exports the log and verifies it offline; the dossiers", _audit_and_dossiers),
]
LAST_STEP = len(STEPS) - 1


def tell(st: DemoState, until: int = LAST_STEP) -> None:
    """The steps in order, up to ``until``; each one checks its outcome and stops the story with its name."""
    for number, (title, fn) in enumerate(STEPS[: until + 1]):
        with step(st, number, title):
            fn(st)


def summary(st: DemoState, keep_running: bool) -> None:
    t = Table("what", "result", box=None)
    for key, value in st.numbers.items():
        t.add_row(key.replace("_", " "), str(value))
    st.console.rule("[bold]summary")
    st.console.print(t)
    say(st, f"gate reports (HTML): {st.work / 'reports'}")
    say(st, f"drift reports (HTML): {st.state_dir / 'monitor-reports' / DEPLOYMENT}")
    say(st, f"dashboard: {st.api_url}/ui (sign in with an API key printed above)")
    if keep_running:
        say(st, "--keep-running: services stay up; Ctrl-C (or SIGTERM) stops everything")
