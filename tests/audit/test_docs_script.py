"""The auditor's script printed in docs/audit-export-format.md works on a real export, without our code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from governance.audit.export import iter_export_lines, prepare_export
from governance.audit.service import append
from tests.audit.conftest import read_lines, write_lines

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-export-format.md"


def _script(tmp_path: Path) -> Path:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- auditor-script-begin -->\s*```python\n(.*?)```\s*<!-- auditor-script-end -->", text, re.S)
    assert m, "the auditor script block is missing from the doc"
    path = tmp_path / "verify_audit.py"
    path.write_text(m.group(1), encoding="utf-8")
    return path


def _run(script: Path, *args: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, so the repository (our code) is not importable by the script
    return subprocess.run(
        [sys.executable, "-I", str(script), *map(str, args)], capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_auditor_script_from_the_doc(session: Session, signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    script = _script(tmp_path)
    pub = tmp_path / "key.pub"
    pub.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    def export(name: str) -> Path:
        plan = prepare_export(session, key=signing_key, actor="user:auditor")
        path = tmp_path / name
        path.write_text("".join(iter_export_lines(session, plan)), encoding="utf-8")
        return path

    for i in range(6):
        append(
            session, actor="user:eng", action="x.y", subject_type="t", subject_id=i, payload={"s": "a\u2028b", "f": 0.1}
        )
    first = export("first.jsonl")
    done = _run(script, first, pub)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: ")

    lines = read_lines(first)
    body = json.loads(lines[3][162:-2])
    body["actor"] = "user:mallory"
    forged = lines[3][:162] + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "}\n"
    bad = write_lines(tmp_path / "bad.jsonl", [*lines[:3], forged, *lines[4:]])
    done = _run(script, bad, pub)
    assert done.returncode != 0 and "hash mismatch" in done.stderr

    append(session, actor="user:eng", action="x.y", subject_type="t", subject_id="later")
    second = export("second.jsonl")
    done = _run(script, second, pub, first)
    assert done.returncode == 0, done.stderr
    truncated = write_lines(tmp_path / "short.jsonl", [*read_lines(second)[:-3], read_lines(second)[-1]])
    assert _run(script, truncated, pub).returncode != 0
