"""``govern submit | promote | rollback | freeze | unfreeze`` and ``govern deployments``.

User actions go through the HTTP API (``GOVERN_API_URL``, ``GOVERN_API_KEY``) so the
audit log records who acted; the server's refusal message is shown as is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from governance.cli.common import console, fail
from governance.client import ApiError, GovernClient
from governance.policy import PolicyError, parse_policy
from governance.settings import Settings, SettingsError

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_FILE = "token.safetensors"  # aligner.artifact.TOKEN_FILE (not imported: it pulls torch)

deployments_app = typer.Typer(help="Create and inspect deployments.", no_args_is_help=True)


def api_errors(fn: F) -> F:
    """Show the API's refusal (or why it cannot be reached) as one line and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            fail(str(exc), code=1 if exc.status else 2)
        except SettingsError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def client() -> GovernClient:
    return GovernClient()


def _parse_time(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{what} must be an ISO 8601 time with a timezone, e.g. 2026-12-01T12:00:00Z (got {value!r})")
    if ts.tzinfo is None:
        fail(f"{what} needs a timezone, e.g. 2026-12-01T12:00:00Z")
    return ts


# the server's rules (governance.registry.service.check_name, the API schemas), checked here first so
# a typo costs no round trip and gets one clear line
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_COMMENT = 10_000
MAX_REASON = 2_000
MAX_POLICY_CHARS = 200_000


def check_name(value: str, what: str, *, max_len: int = 200) -> str:
    if not _NAME.match(value) or len(value) > max_len:
        fail(
            f"{what} {value!r} is not valid: use 1-{max_len} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_id(value: int | None, what: str) -> int | None:
    if value is not None and not 1 <= value < 2**63:
        fail(f"{what} must be a positive id (got {value})")
    return value


def check_text(value: str | None, what: str, *, max_len: int, required: bool = True) -> str | None:
    if value is None:
        return None
    if required and not value.strip():
        fail(f"{what} must not be empty")
    if len(value) > max_len:
        fail(f"{what} is {len(value)} characters; the limit is {max_len}")
    if "\x00" in value:
        fail(f"{what} must not contain NUL characters")
    return value


def read_policy(path: Path) -> str:
    """The policy file's text, validated with `governance.policy.parse_policy` (unknown keys named)."""
    if not path.exists():
        fail(f"policy file not found: {path}")
    if not path.is_file():
        fail(f"policy file {path} is not a file")
    raw = path.read_bytes()
    if len(raw) > MAX_POLICY_CHARS:
        fail(f"policy file {path} is {len(raw)} bytes; the limit is {MAX_POLICY_CHARS}")
    try:
        parse_policy(raw)
    except PolicyError as exc:
        problems = "; ".join(" ".join(p.split()) for p in exc.problems)  # YAML errors span lines
        fail(f"policy file {path} is invalid: {problems}")
    return raw.decode("utf-8")


def _artifact_bytes(path: Path) -> bytes:
    if not path.exists():
        fail(f"token not found: {path} (pass the directory `govern train` wrote, or its {TOKEN_FILE})")
    file = path / TOKEN_FILE if path.is_dir() else path
    if not file.is_file():
        fail(f"{path} holds no {TOKEN_FILE}; pass the directory `govern train` wrote (or the archive file)")
    data = file.read_bytes()
    # safetensors: an 8-byte little-endian header length, then that many bytes of JSON
    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if header_len < 2 or 8 + header_len > len(data) or data[8:9] != b"{":
        fail(f"{file} is not a safetensors token file")
    return data


def submit_cmd(
    directory: Path = typer.Argument(..., help="token directory from `govern train` (or a .safetensors archive)"),
    adapter: str = typer.Option(..., "--adapter", help="the adapter (line of versions) it belongs to"),
    deployment: str | None = typer.Option(None, "--deployment", help="the deployment it is meant for"),
    parent: int | None = typer.Option(None, "--parent", help="the version it was trained from"),
) -> None:
    """Register a token version; its evaluation gate is queued."""
    _submit(directory, adapter, deployment, parent)


@api_errors
def _submit(directory: Path, adapter: str, deployment: str | None, parent: int | None) -> None:
    check_name(adapter, "--adapter")
    if deployment is not None:
        check_name(deployment, "--deployment", max_len=100)
    check_id(parent, "--parent")
    data = _artifact_bytes(directory)
    with client() as c:
        v = c.submit(data, adapter=adapter, deployment=deployment, parent_id=parent)
    if v.get("created", True):
        console.print(
            f"submitted version [bold]{v['id']}[/] (sha256 {v['sha256'][:12]}..., state {v['state']}); "
            "the gate is queued",
            highlight=False,
        )
    else:
        console.print(
            f"already registered as version [bold]{v['id']}[/] (state {v['state']}); nothing new stored",
            highlight=False,
        )
    console.print(str(v["id"]), highlight=False)


def promote_cmd(
    version: int = typer.Argument(..., help="the approved version id"),
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
) -> None:
    """Make an approved version the active one of a deployment."""
    _promote(version, deployment)


@api_errors
def _promote(version: int, deployment: str) -> None:
    check_id(version, "VERSION")
    check_name(deployment, "--deployment", max_len=100)
    with client() as c:
        p = c.promote(deployment, version)
    prev = f" (version {p['previous_version_id']} superseded)" if p.get("previous_version_id") else ""
    console.print(
        f"version {p['version_id']} is active on {deployment}, generation {p['generation']}{prev}", highlight=False
    )


def rollback_cmd(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    to: int | None = typer.Option(None, "--to", help="a superseded or approved version (default: the last approved)"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the audit log)"),
) -> None:
    """Roll a deployment back to the last approved token (or a named version)."""
    _rollback(deployment, to, reason)


@api_errors
def _rollback(deployment: str, to: int | None, reason: str) -> None:
    check_name(deployment, "--deployment", max_len=100)
    check_id(to, "--to")
    check_text(reason, "--reason", max_len=MAX_REASON)
    with client() as c:
        p = c.rollback(deployment, reason=reason, to_version_id=to)
    console.print(
        f"rolled back {deployment}: version {p['previous_version_id']} -> {p['version_id']}, "
        f"generation {p['generation']}",
        highlight=False,
    )


def freeze_cmd(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    until: str | None = typer.Option(None, "--until", help="expiry, ISO 8601 with timezone (default: until unfrozen)"),
    reason: str | None = typer.Option(None, "--reason"),
) -> None:
    """Switch automatic rollback off for a deployment."""
    check_name(deployment, "--deployment", max_len=100)
    check_text(reason, "--reason", max_len=MAX_REASON, required=False)
    _freeze(deployment, _parse_time(until, "--until"), reason)


@api_errors
def _freeze(deployment: str, until: datetime | None, reason: str | None) -> None:
    with client() as c:
        d = c.freeze(deployment, until=until, reason=reason)
    console.print(
        f"{deployment} is frozen"
        + (f" until {d['frozen_until']}" if d.get("frozen_until") else "")
        + ": automatic rollback is off",
        highlight=False,
    )


def unfreeze_cmd(
    deployment: str = typer.Option(..., "--deployment", help="deployment name"),
    reason: str | None = typer.Option(None, "--reason"),
) -> None:
    """Switch automatic rollback back on."""
    check_name(deployment, "--deployment", max_len=100)
    check_text(reason, "--reason", max_len=MAX_REASON, required=False)
    _unfreeze(deployment, reason)


@api_errors
def _unfreeze(deployment: str, reason: str | None) -> None:
    with client() as c:
        c.unfreeze(deployment, reason=reason)
    console.print(f"{deployment} is unfrozen: automatic rollback is on", highlight=False)


@deployments_app.command("create")
@api_errors
def deployments_create(
    name: str = typer.Argument(..., help="deployment name"),
    policy: Path = typer.Option(..., "--policy", help="policy YAML file (stored with its sha256)"),
    base_model: str | None = typer.Option(
        None, "--base-model", help="registered base model (default: GOVERN_BASE_MODEL)"
    ),
) -> None:
    """Create a deployment (admins)."""
    check_name(name, "deployment name", max_len=100)
    if base_model is not None:
        check_name(base_model, "--base-model")
    text = read_policy(policy)
    with client() as c:
        d = c.create_deployment(name, base_model=base_model or Settings().base_model, policy=text)
    console.print(
        f"created deployment [bold]{d['name']}[/] on {d['base_model']} with policy {d['policy_sha256'][:12]}...",
        highlight=False,
    )


def _print_policy_history(versions: list[dict[str, Any]], *, diff: bool) -> None:
    table = Table("policy", "state", "sha256", "gate digest", "binds approvals", "changed", "proposed by", "reason",
                  "decided by", title="policy history", title_justify="left")
    for v in versions:
        table.add_row(f"v{v['seq']}", v["state"], v["policy_sha256"][:12], v["gate_digest"][:12],
                      "yes" if v["binds_approvals"] else "no", ", ".join(v["changed_sections"]) or "-",
                      f"{v['proposed_by']} {v['proposed_at'][:19]}", v["reason"],
                      f"{v['decided_by'] or '-'}" + (f": {v['decision_comment']}" if v["decision_comment"] else ""))
    console.print(table)
    if diff:
        for v in versions:
            if v["diff"]:
                console.print(f"[bold]v{v['seq']}[/] against the version before:", highlight=False)
                console.print(v["diff"].rstrip("\n"), highlight=False, markup=False)


@deployments_app.command("set-policy")
@api_errors
def deployments_set_policy(
    name: str = typer.Argument(..., help="deployment name"),
    policy: Path = typer.Option(..., "--policy", help="the new policy YAML file"),
    reason: str = typer.Option(..., "--reason", help="what the change is for (recorded with it)"),
) -> None:
    """Propose a new version of the deployment's policy (ML engineers, admins); an officer decides."""
    check_name(name, "deployment name", max_len=100)
    check_text(reason, "--reason", max_len=MAX_REASON)
    text = read_policy(policy)
    with client() as c:
        v = c.propose_policy(name, policy=text, reason=reason)
    effect = ("changes the gate: approvals under the old gate policy will not carry over" if v["binds_approvals"]
              else "leaves the gate as it is: every approval stays valid")
    console.print(f"proposed policy v{v['seq']} for {name} ({v['policy_sha256'][:12]}...; changed: "
                  f"{', '.join(v['changed_sections']) or 'nothing parsed differs'}); it {effect}. A compliance officer "
                  f"decides: `govern deployments approve-policy {name} --comment TEXT` or `reject-policy`",
                  highlight=False)


def _decide_policy(name: str, seq: int | None, comment: str, *, approve: bool) -> None:
    check_name(name, "deployment name", max_len=100)
    check_id(seq, "--seq")
    check_text(comment, "--comment", max_len=MAX_COMMENT)
    with client() as c:
        if seq is None:
            seq = c.deployment(name).get("pending_policy_seq")
            if seq is None:
                fail(f"deployment {name!r} has no policy version waiting for a decision")
        v = c.decide_policy(name, seq, approve=approve, comment=comment)
    if not approve:
        console.print(f"rejected policy v{v['seq']} of {name}; the policy in force is unchanged", highlight=False)
        return
    console.print(f"policy v{v['seq']} is now {name}'s policy ({v['policy_sha256'][:12]}..., gate digest "
                  f"{v['gate_digest'][:12]}...)", highlight=False)
    stale = v.get("versions_to_regate") or []
    if stale:
        ids = ", ".join(str(i) for i in stale)
        console.print(f"the gate changed: version(s) {ids} are approved under the old gate policy only; re-gate each "
                      f"to keep it as a promotion or rollback target: `govern gate run VERSION --deployment {name}`",
                      highlight=False)


@deployments_app.command("approve-policy")
@api_errors
def deployments_approve_policy(
    name: str = typer.Argument(..., help="deployment name"),
    comment: str = typer.Option(..., "--comment", help="why (recorded with the decision)"),
    seq: int | None = typer.Option(None, "--seq", help="the proposed version (default: the pending one)"),
) -> None:
    """Approve the proposed policy version (compliance officers; not its proposer)."""
    _decide_policy(name, seq, comment, approve=True)


@deployments_app.command("reject-policy")
@api_errors
def deployments_reject_policy(
    name: str = typer.Argument(..., help="deployment name"),
    comment: str = typer.Option(..., "--comment", help="why (recorded with the decision)"),
    seq: int | None = typer.Option(None, "--seq", help="the proposed version (default: the pending one)"),
) -> None:
    """Reject the proposed policy version (compliance officers; not its proposer)."""
    _decide_policy(name, seq, comment, approve=False)


@deployments_app.command("show")
@api_errors
def deployments_show(
    name: str = typer.Argument(..., help="deployment name"),
    diff: bool = typer.Option(True, "--diff/--no-diff", help="print each policy version's diff against the one before"),
) -> None:
    """Show a deployment: active version, generation, freeze, policy history, recent promotions."""
    check_name(name, "deployment name", max_len=100)
    with client() as c:
        d = c.deployment(name)
        history = c.promotions(name, limit=10)
        versions = c.policy_history(name)
    active = f"version {d['active_version_id']} ({d['active_sha256'][:12]}...)" if d["active_version_id"] else "none"
    frozen = "yes" + (f" until {d['frozen_until']}" if d["frozen_until"] else "") if d["frozen"] else "no"
    console.print(f"[bold]{d['name']}[/] on {d['base_model']}, policy v{d['policy_seq']} {d['policy_sha256'][:12]}..."
                  f", gate digest {d['gate_digest'][:12]}...", highlight=False)
    if d.get("pending_policy_seq"):
        console.print(f"[yellow]policy v{d['pending_policy_seq']} is proposed and waits for a compliance officer "
                      f"(`govern deployments approve-policy {name} --comment TEXT`)[/]", highlight=False)
    _print_policy_history(versions, diff=diff)
    console.print(f"active: {active}   generation: {d['generation']}   frozen: {frozen}", highlight=False)
    if history:
        table = Table("gen", "kind", "version", "previous", "actor", "reason", "at")
        for p in history:
            table.add_row(
                str(p["generation"]),
                p["kind"],
                str(p["version_id"]),
                str(p["previous_version_id"] or "-"),
                p["actor"],
                p["reason"] or "",
                p["created_at"][:19],
            )
        console.print(table)
