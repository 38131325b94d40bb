"""``govern dossier``: write a version's or a deployment period's evidence dossier (.pdf or .html).

Like ``govern audit export`` this runs on the installation (database and signing key):
building the dossier seals the audit entries it cites with a signed export checkpoint, in
one unit of work; the file is written only after that commits, atomically. Bad input
(an unknown version or deployment, an empty period, ``--until`` before ``--since``, an
extension other than .pdf/.html) is one line and exit 1, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from governance.audit.export import _os_user
from governance.audit.signing import AuditKeyError, default_private_key_path, load_private_key
from governance.cli.audit_cmds import _parse_time
from governance.cli.common import clear_errors, console, fail
from governance.db import check_database, get_engine, unit_of_work
from governance.dossier import service as dossiers
from governance.errors import InvalidInput, NotFound
from governance.settings import get_settings

dossier_app = typer.Typer(help="Evidence dossiers of a version or a deployment period (.pdf or .html).",
                          no_args_is_help=True)


def _checked_out(out: Path) -> str:
    try:
        fmt = dossiers.format_of_path(out)
    except InvalidInput as exc:
        fail(str(exc), code=1)
    if not out.parent.exists():
        fail(f"folder {out.parent} does not exist", code=1)
    return fmt


def _write(out: Path, build) -> dossiers.Document:  # type: ignore[no-untyped-def]
    try:
        key = load_private_key(default_private_key_path(get_settings()))
    except AuditKeyError as exc:
        fail(str(exc), code=1)
    engine = get_engine()
    check_database(engine)
    actor = f"system:cli/{_os_user()}"
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("collecting facts", total=None)
        try:
            with unit_of_work(engine) as session:
                doc: dossiers.Document = build(session, key, actor, lambda what: bar.update(task, description=what))
        except (InvalidInput, NotFound) as exc:
            fail(str(exc), code=1)
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.write_bytes(doc.content)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    console.print(f"wrote {out} ({len(doc.content):,} bytes): {doc.facts} facts from {doc.entries} audit entries, "
                  f"sealed by audit entry #{doc.export_entry_seq}", highlight=False)
    return doc


@dossier_app.command("version")
@clear_errors
def version_cmd(
    version: int = typer.Argument(..., help="the version id"),
    out: Path = typer.Option(..., "--out", help="file to write: .pdf or .html"),
) -> None:
    """Identity, gate, reviews, promotions and rollbacks of one version, with the audit entries they rest on."""
    fmt = _checked_out(out)
    _write(out, lambda s, key, actor, step: dossiers.version_dossier(
        s, version_id=version, fmt=fmt, key=key, actor=actor, progress=step))


@dossier_app.command("deployment")
@clear_errors
def deployment_cmd(
    name: str = typer.Argument(..., help="the deployment"),
    out: Path = typer.Option(..., "--out", help="file to write: .pdf or .html"),
    since: str | None = typer.Option(None, "--since", help="period start, inclusive (ISO 8601; default: creation)"),
    until: str | None = typer.Option(None, "--until", help="period end, exclusive (ISO 8601; default: now)"),
) -> None:
    """Versions, detector charts, drift checks, alerts and rollbacks of a deployment over a period."""
    fmt = _checked_out(out)
    try:
        since_ts, until_ts = _parse_time("--since", since), _parse_time("--until", until)
    except typer.Exit:
        raise typer.Exit(1) from None
    if since_ts is not None and until_ts is not None and until_ts <= since_ts:
        fail(f"--until ({until}) must be later than --since ({since})", code=1)
    _write(out, lambda s, key, actor, step: dossiers.deployment_dossier(
        s, name=name, fmt=fmt, key=key, actor=actor, since=since_ts, until=until_ts, progress=step))
