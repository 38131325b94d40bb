"""``govern audit`` through typer's CliRunner: keygen, export, verify, checkpoint; exit codes and messages."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.cli.main import app

runner = CliRunner()


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, scratch_db: Callable[[], str], tmp_path: Path) -> Iterator[Path]:
    """GOVERN_ settings pointing at a scratch database (the CLI commits) and a temporary state folder."""
    from governance.settings import reset_settings_cache

    state = tmp_path / "state"
    monkeypatch.setenv("GOVERN_DATABASE_URL", scratch_db())
    monkeypatch.setenv("GOVERN_STATE_DIR", str(state))
    monkeypatch.delenv("GOVERN_SIGNING_KEY_PATH", raising=False)
    reset_settings_cache()
    yield state
    reset_settings_cache()


def _seed(n: int) -> None:
    from governance.audit.service import append
    from governance.db import get_engine, unit_of_work

    with unit_of_work(get_engine()) as session:
        for i in range(n):
            append(
                session,
                actor="user:eng",
                action="version.submit",
                subject_type="version",
                subject_id=i,
                payload={"i": i},
            )


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_keygen_writes_a_private_key_readable_only_by_its_owner(cli_env: Path) -> None:
    code, out = _run("keygen")
    assert code == 0, out
    key = cli_env / "audit" / "ed25519.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_suffix(".pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "key id" in out
    code, out = _run("keygen")
    assert code == 2 and "already exists" in out
    code, out = _run("keygen", "--force")
    assert code == 0
    code, out = _run("keygen", "--out", str(cli_env / "elsewhere" / "k.key"))
    assert code == 0 and (cli_env / "elsewhere" / "k.pub").exists()


def test_export_then_verify_and_tampering_exits_1(cli_env: Path, tmp_path: Path) -> None:
    assert _run("keygen")[0] == 0
    _seed(8)
    out = tmp_path / "audit.jsonl"
    code, text = _run("export", "--out", str(out))
    assert code == 0, text
    assert "exported 8 entries (#1..#8)" in text and "audit entry #9" in text
    code, text = _run("verify", str(out))
    assert code == 0, text
    assert text.startswith("OK: 8 entries")
    pub = cli_env / "audit" / "ed25519.pub"
    assert _run("verify", str(out), "--public-key", str(pub))[0] == 0

    lines = out.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join([*lines[:4], lines[4].replace("version.submit", "version.approve"), *lines[5:]]))
    code, text = _run("verify", str(bad))
    assert code == 1
    assert "FAILED at #4" in text and "hash mismatch" in text

    # a second export extends the first one's checkpoint; a checkpoint file works as well
    _seed(2)
    out2 = tmp_path / "audit2.jsonl"
    assert _run("export", "--out", str(out2))[0] == 0
    code, text = _run("verify", str(out2), "--checkpoint", str(out))
    assert code == 0 and "extends the older checkpoint at #8" in text, text
    cp_file = tmp_path / "cp.json"
    code, text = _run("checkpoint", "--out", str(cp_file))
    assert code == 0, text
    assert json.loads(cp_file.read_text())["size"] == 12  # 8, export, 2, export
    code, text = _run("verify", str(out2), "--checkpoint", str(cp_file))
    assert code == 1 and "ends at #11" in text

    # CSV with its sidecar
    csv_out = tmp_path / "audit.csv"
    code, text = _run("export", "--out", str(csv_out), "--format", "csv", "--since", "2000-01-01")
    assert code == 0, text
    assert Path(str(csv_out) + ".manifest.json").exists()
    assert _run("verify", str(csv_out))[0] == 0


def test_verify_needs_no_database_but_a_trusted_key(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run("keygen")[0] == 0
    _seed(3)
    out = tmp_path / "a.jsonl"
    assert _run("export", "--out", str(out))[0] == 0
    # the database is gone for the verifier: it must not care
    monkeypatch.setenv("GOVERN_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    from governance.settings import reset_settings_cache

    reset_settings_cache()
    assert _run("verify", str(out))[0] == 0
    # someone else's key
    other = tmp_path / "other.key"
    assert _run("keygen", "--out", str(other))[0] == 0
    code, text = _run("verify", str(out), "--public-key", str(other.with_suffix(".pub")))
    assert code == 1 and "not by the trusted public key" in text
    # no key at all, a missing file, bad input
    monkeypatch.setenv("GOVERN_STATE_DIR", str(tmp_path / "empty-state"))
    reset_settings_cache()
    code, text = _run("verify", str(out))
    assert code == 2 and "no public key" in text
    code, text = _run("verify", str(tmp_path / "nope.jsonl"), "--public-key", str(other.with_suffix(".pub")))
    assert code == 2 and "file not found" in text
    code, text = _run("verify", str(out), "--public-key", str(out))
    assert code == 2 and "not an Ed25519 public key" in text


def test_export_input_errors(cli_env: Path, tmp_path: Path) -> None:
    code, text = _run("export", "--out", str(tmp_path / "a.jsonl"))
    assert code == 2 and "govern audit keygen" in text
    assert _run("keygen")[0] == 0
    code, text = _run("export", "--out", str(tmp_path / "a.jsonl"), "--since", "yesterday")
    assert code == 2 and "ISO 8601" in text
    code, text = _run("export", "--out", str(tmp_path / "a.xml"), "--format", "xml")
    assert code == 2 and "unknown export format" in text
    code, text = _run("export", "--out", str(tmp_path / "a.jsonl"), "--since", "2026-02-01", "--until", "2026-01-01")
    assert code == 2 and "later than" in text
    code, text = _run("export", "--out", str(tmp_path / "no" / "such" / "a.jsonl"))
    assert code == 2 and "does not exist" in text
