"""Step 7 of the demo: the auditor exports the log through the API and verifies it offline;
a copy with one byte changed must fail verification."""

from __future__ import annotations

from pathlib import Path

import httpx

from governance.audit.signing import load_public_key, public_path_for
from governance.audit.verify import verify_export
from governance.cli.demo.state import DemoFailed, DemoState, say


def audit_export_verify(st: DemoState) -> None:
    out = st.work / "audit-export.jsonl"
    _export(st, out)
    pub = load_public_key(public_path_for(Path(st.env["GOVERN_SIGNING_KEY_PATH"])))
    ok = verify_export(out, public_key=pub)
    if not ok.ok:
        raise DemoFailed(f"the fresh export does not verify: {ok}")
    say(st, f"auditor exported {ok.count} entries to {out} and verified them offline: intact")
    bad = tampered_copy(out, st.work / "audit-export-tampered.jsonl")
    res = verify_export(bad, public_key=pub)
    if res.ok:
        raise DemoFailed("a tampered export verified")
    say(st, f"one byte changed in a copy: verification fails at entry #{res.bad_seq}: {res.reason}")
    st.numbers["audit_entries"] = ok.count


def _export(st: DemoState, out: Path) -> None:
    """Stream the auditor's export of the whole log to ``out``."""
    with httpx.stream("GET", f"{st.api_url}/v1/audit/export", headers={"Authorization": f"Bearer {st.users.auditor}"},
                      timeout=120) as r:
        if r.status_code != 200:
            raise DemoFailed(f"audit export answered {r.status_code}: {r.read()[:200]!r}")
        with out.open("wb") as fh:
            for chunk in r.iter_bytes():
                fh.write(chunk)


def tampered_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with one byte of an early entry's actor changed."""
    lines = src.read_bytes().split(b"\n")
    target = min(len(lines) - 3, 5)
    tampered = bytearray(lines[target])
    i = tampered.find(b'"actor":"') + len(b'"actor":"')
    tampered[i] = ord("X") if tampered[i] != ord("X") else ord("Y")
    lines[target] = bytes(tampered)
    dst.write_bytes(b"\n".join(lines))
    return dst
