"""``govern review approve|reject VERSION --comment TEXT`` (compliance officers), through the API."""

from __future__ import annotations

import typer

from governance.cli.common import console
from governance.cli.deploy_cmds import MAX_COMMENT, api_errors, check_id, check_text, client

review_app = typer.Typer(help="Approve or reject gated versions (four eyes).", no_args_is_help=True)


@review_app.command("approve")
@api_errors
def approve(
    version: int = typer.Argument(..., help="a gate-passed version id"),
    comment: str = typer.Option(..., "--comment", help="why (recorded with the approval)"),
    acknowledge: list[str] = typer.Option(
        [], "--acknowledge", metavar="WAIVER",
        help="a waiver of the gate run, by name (repeat for each; a gate 'passed with waivers' needs them all)"),
) -> None:
    """Approve a version; the approval binds its artifact, gate evidence and policy digests.

    A gate that "passed with waivers" (bounds the bare base model breaks too, not
    enforced) is approved only when every waiver is acknowledged by name:
    `--acknowledge must_refuse --acknowledge disclaimer` (see `govern gate report VERSION`)."""
    check_id(version, "VERSION")
    check_text(comment, "--comment", max_len=MAX_COMMENT)
    for name in acknowledge:
        check_text(name, "--acknowledge", max_len=300)
    with client() as c:
        r = c.approve(version, comment, acknowledge)
    acked = r.get("acknowledged_waivers") or []
    console.print(
        f"approved version {r['version_id']} (bound to artifact {r['artifact_sha256'][:12]}..., "
        f"evidence {(r['evidence_digest'] or '-')[:12]}...)"
        + (f"; waivers acknowledged: {', '.join(acked)}" if acked else ""),
        highlight=False,
    )


@review_app.command("reject")
@api_errors
def reject(
    version: int = typer.Argument(..., help="a gate-passed version id"),
    comment: str = typer.Option(..., "--comment", help="why (recorded with the rejection)"),
) -> None:
    """Reject a version (terminal)."""
    check_id(version, "VERSION")
    check_text(comment, "--comment", max_len=MAX_COMMENT)
    with client() as c:
        r = c.reject(version, comment)
    console.print(f"rejected version {r['version_id']}", highlight=False)
