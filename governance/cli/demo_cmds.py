"""``govern demo``: the end-to-end story on the embedded default (see governance/cli/demo/)."""

from __future__ import annotations

import typer

from governance.cli.common import clear_errors, console, fail
from governance.cli.procs import Interrupted


@clear_errors
def demo_cmd(
    fast: bool = typer.Option(False, "--fast", help="smaller training, gate and traffic (for tests)"),
    keep_running: bool = typer.Option(False, "--keep-running", help="leave the services and dashboard up"),
    db_name: str = typer.Option("govern_demo", "--db-name", help="the demo's database (dropped and re-created)"),
    until: int = typer.Option(
        7, "--until", min=0, max=7,
        help="stop after this step (0: setup, 1: users and services, ... 5: shadow, 7: audit); with --keep-running "
        "the services stay up, e.g. `--until 1 --keep-running` for the services without the story",
    ),
) -> None:
    """Tell the whole story end to end: train, gate, review, shadow, promote, drift, roll back, audit."""
    from governance.cli.demo import DemoFailed, run  # defers torch (the demo trains tokens with aligner)

    try:
        if not db_name.replace("_", "").isalnum() or len(db_name) > 60:
            fail("--db-name: letters, digits and underscores only, at most 60 characters")
        run(fast=fast, keep_running=keep_running, db_name=db_name, console=console, until=until)
    except DemoFailed as exc:
        fail(f"demo failed: {exc}\n  logs of the services: state/demo/logs/", code=1)
    except Interrupted as exc:
        stopped = ", ".join(exc.stopped) or "nothing was running"
        fail(f"interrupted by {exc.signame}; stopped {stopped}", code=exc.exit_code)
    console.print("[bold green]demo finished[/]")
