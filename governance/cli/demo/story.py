"""The demo's story as its ordered steps (`run`), and the summary at the end."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from governance import embedded
from governance.cli.demo.audit import audit_export_verify
from governance.cli.demo.dossiers import write_dossiers
from governance.cli.demo.gates import wait_for_gates
from governance.cli.demo.people import create_users
from governance.cli.demo.processes import start_processes
from governance.cli.demo.review import review_and_promote
from governance.cli.demo.servers import prepare_model, setup
from governance.cli.demo.state import DEMO_DB, DEPLOYMENT, DemoState, say, step
from governance.cli.demo.tokens import train_and_submit
from governance.cli.demo.traffic import traffic_and_rollback
from governance.cli.procs import ProcessGroup
from governance.settings import get_settings


def run(
    *, fast: bool, keep_running: bool, db_name: str = DEMO_DB, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console()
    settings = get_settings()
    state_dir = settings.ensure_state_dir()
    work = state_dir / "demo"
    st = DemoState(fast=fast, db_name=db_name, state_dir=state_dir, work=work, console=console)
    st.procs = ProcessGroup(work / "logs")
    t0 = time.monotonic()
    try:
        tell(st)
        st.numbers["total_seconds"] = round(time.monotonic() - t0)
        summary(st, keep_running)
        if keep_running:
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
        return {"versions": st.versions, "numbers": st.numbers, "env": st.env}
    finally:
        st.procs.stop_all()
        if st.started_services and not keep_running:
            embedded.down(settings)


def tell(st: DemoState) -> None:
    """The steps in order; each one checks its outcome and stops the story with its name."""
    with step(st, 0, "setup: embedded PostgreSQL + Redis, fresh demo database, base model"):
        setup(st)
        prepare_model(st)
    with step(st, 1, "three users: an ML engineer, a compliance officer, an auditor"):
        create_users(st)
        start_processes(st)
    with step(st, 2, "train two good token versions and one bad one, submit all three"):
        train_and_submit(st)
    with step(st, 3, "the evaluation gate"):
        wait_for_gates(st)
    with step(st, 4, "four-eyes review and promotion"):
        review_and_promote(st)
    with step(st, 5, "production traffic, drift, automatic rollback"):
        traffic_and_rollback(st)
    with step(st, 6, "the auditor exports the log and verifies it offline"):
        audit_export_verify(st)
        write_dossiers(st)


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
        say(st, "--keep-running: services stay up; Ctrl-C stops everything")
