"""``govern audit``: make the signing key, export the log, verify an export offline, checkpoint now.

``verify`` touches neither the database nor the network: it reads the export file, an
optional older checkpoint and the trusted public key, and exits 0 only for an intact
file (1 when verification fails, 2 for unusable input such as a missing key).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from governance.audit.export import ExportError, export_to_file
from governance.audit.service import checkpoint_record, write_checkpoint
from governance.audit.signing import (
    AuditKeyError,
    default_private_key_path,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_path_for,
)
from governance.audit.verify import load_checkpoint_file, verify_export
from governance.cli.common import clear_errors, console, err_console, fail
from governance.db import check_database, get_engine, unit_of_work
from governance.dossier.verify import is_dossier, verify_dossier
from governance.settings import get_settings

audit_app = typer.Typer(help="Audit log: keygen, export, verify, checkpoint.", no_args_is_help=True)


def _parse_time(option: str, value: str | None) -> datetime | None:
    """ISO 8601 date or date-time; a time without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _private_key_path(key: Path | None) -> Path:
    return key if key is not None else default_private_key_path(get_settings())


@audit_app.command("keygen")
@clear_errors
def keygen_cmd(
    out: Path | None = typer.Option(
        None, "--out", help="private key file (default: GOVERN_SIGNING_KEY_PATH or <state>/audit/ed25519.key)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an existing key pair"),
) -> None:
    """Write an Ed25519 key pair for signing checkpoints (private key mode 0600, public key beside it)."""
    try:
        files = generate_keypair(_private_key_path(out), force=force)
    except AuditKeyError as exc:
        fail(str(exc))
    console.print(f"private key  {files.private_path}  (mode 0600, keep it secret)", highlight=False)
    console.print(f"public key   {files.public_path}  (give a copy to your auditors)", highlight=False)
    console.print(f"key id       {files.key_id}", highlight=False)


@audit_app.command("export")
@clear_errors
def export_cmd(
    out: Path = typer.Option(..., "--out", help="file to write (JSONL; CSV also writes FILE.manifest.json)"),
    since: str | None = typer.Option(None, "--since", help="first entry time, inclusive (ISO 8601, UTC default)"),
    until: str | None = typer.Option(None, "--until", help="end time, exclusive (ISO 8601, UTC default)"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
    key: Path | None = typer.Option(None, "--key", help="signing key (default: the installation's key)"),
) -> None:
    """Export the log (or a time range of it) with a signed manifest and checkpoint; the export is audited."""
    since_ts, until_ts = _parse_time("--since", since), _parse_time("--until", until)
    try:
        private = load_private_key(_private_key_path(key))
    except AuditKeyError as exc:
        fail(str(exc))
    engine = get_engine()
    check_database(engine)
    try:
        plan = export_to_file(engine, out, key=private, since=since_ts, until=until_ts, fmt=fmt)
    except ExportError as exc:
        fail(str(exc))
    rng = f"#{plan.first_seq}..#{plan.last_seq}" if plan.count else "no entries in that range"
    console.print(f"exported {plan.count} entries ({rng}) to {out}", highlight=False)
    if fmt == "csv":
        console.print(f"manifest and checkpoint in {out}.manifest.json", highlight=False)
    cp = plan.checkpoint
    console.print(
        f"checkpoint #{cp['size']} head {cp['head_hash'][:16]}... signed by key {cp['key_id']}; "
        f"this export is audit entry #{plan.export_entry_seq}",
        highlight=False,
    )


@audit_app.command("verify")
@clear_errors
def verify_cmd(
    file: Path = typer.Argument(
        ..., help="an export file (.jsonl, or .csv with its .manifest.json), or an evidence dossier (.pdf, .html)"
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="an older checkpoint (JSON file or older export) this export must extend"
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="the trusted public key (PEM or hex); default: this installation's .pub"
    ),
) -> None:
    """Verify an export or a dossier offline (no database, no network). Exit 0 only if it is intact.

    A dossier's embedded audit entries are verified as an export, then every fact it cites
    is checked against its entry and against the text the document shows.
    """
    if not file.exists():
        fail(f"file not found: {file}")
    pub_path = public_key if public_key is not None else public_path_for(_private_key_path(None))
    if public_key is None and not pub_path.exists():
        fail("no public key: pass --public-key FILE (your trusted copy of the installation's key)")
    try:
        pub = load_public_key(pub_path)
        older = load_checkpoint_file(checkpoint) if checkpoint is not None else None
    except (AuditKeyError, ValueError) as exc:
        fail(str(exc))
    if is_dossier(file):
        dossier = verify_dossier(file, public_key=pub, older_checkpoint=older)
        if dossier.ok:
            console.print(dossier.summary(), highlight=False, soft_wrap=True)
            return
        err_console.print(f"FAILED: dossier {file}", highlight=False, soft_wrap=True)
        for problem in dossier.problems:
            err_console.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    result = verify_export(file, public_key=pub, older_checkpoint=older)
    if result.ok:
        console.print(result.summary(), highlight=False)
        return
    err_console.print(result.summary(), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
@clear_errors
def checkpoint_cmd(
    out: Path | None = typer.Option(None, "--out", help="also write the checkpoint JSON here (keep it)"),
    key: Path | None = typer.Option(None, "--key", help="signing key (default: the installation's key)"),
) -> None:
    """Sign and store a checkpoint of the current head now."""
    try:
        private = load_private_key(_private_key_path(key))
    except AuditKeyError as exc:
        fail(str(exc))
    engine = get_engine()
    check_database(engine)
    with unit_of_work(engine) as session:
        record = checkpoint_record(write_checkpoint(session, key=private, reason="manual"))
    text = json.dumps(record, separators=(",", ":")) + "\n"  # one line, like an export's last line
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console.print(f"checkpoint written to {out}", highlight=False)
    console.print(
        f"checkpoint #{record['size']} head {record['head_hash']} signed by key {record['key_id']}", highlight=False
    )
