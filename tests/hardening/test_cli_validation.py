"""The CLI checks arguments and files before it calls the API: one clear line, a non-zero exit.

The API URL points at a closed port, so a command that got past its own checks would
fail with "cannot reach the governance API" instead: each test shows the check ran first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.cli.main import app as cli
from tests.governance.conftest import POLICY_TEXT

ENV = {"GOVERN_API_URL": "http://127.0.0.1:9", "GOVERN_API_KEY": "gov_aaaaaaaa_x", "COLUMNS": "300"}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=ENV)
    return result.exit_code, result.output.strip()


@pytest.fixture()
def token_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tok"
    d.mkdir()
    return d


def _one_line_error(code: int, out: str, *needles: str) -> None:
    assert code != 0, out
    assert "cannot reach" not in out, out
    assert out.startswith("error:") and len(out.splitlines()) == 1, out
    for n in needles:
        assert n in out, out


def test_policy_with_an_unknown_key_is_refused_before_the_api(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(POLICY_TEXT.replace("gate:", "gate:\n  bais: {alpha: 0.05}", 1))
    _one_line_error(*_run("deployments", "create", "prod", "--policy", str(bad)), "bais", str(bad))
    _one_line_error(*_run("deployments", "create", "prod", "--policy", str(tmp_path / "missing.yaml")), "not found")
    bad.write_text("gate: [unclosed")
    _one_line_error(*_run("deployments", "create", "prod", "--policy", str(bad)), "YAML")


def test_a_valid_policy_gets_as_far_as_the_api(tmp_path: Path) -> None:
    good = tmp_path / "policy.yaml"
    good.write_text(POLICY_TEXT)
    code, out = _run("deployments", "create", "prod", "--policy", str(good), "--base-model", "m")
    assert code != 0 and "cannot reach the governance API" in out, out


def test_submit_checks_the_token_file(tmp_path: Path, token_dir: Path) -> None:
    _one_line_error(*_run("submit", str(tmp_path / "nope"), "--adapter", "a"), "not found")
    _one_line_error(*_run("submit", str(token_dir), "--adapter", "a"), "token.safetensors")
    (token_dir / "token.safetensors").write_bytes(b"not a token")
    _one_line_error(*_run("submit", str(token_dir), "--adapter", "a"), "not a safetensors")
    _one_line_error(*_run("submit", str(token_dir), "--adapter", "bad name"), "--adapter")
    _one_line_error(*_run("submit", str(token_dir), "--adapter", "a", "--parent", "0"), "--parent")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("review", "approve", "0", "--comment", "ok"), "VERSION"),
        (("review", "approve", "3", "--comment", "  "), "--comment"),
        (("review", "reject", "3", "--comment", "x" * 10_001), "10000"),
        (("promote", "0", "--deployment", "prod"), "VERSION"),
        (("promote", "3", "--deployment", "prod/../x"), "--deployment"),
        (("rollback", "--deployment", "prod", "--reason", ""), "--reason"),
        (("rollback", "--deployment", "prod", "--reason", "r", "--to", "0"), "--to"),
        (("freeze", "--deployment", "prod", "--until", "tomorrow"), "--until"),
        (("freeze", "--deployment", "prod", "--reason", "r" * 2_001), "2000"),
        (("unfreeze", "--deployment", "p q"), "--deployment"),
        (("deployments", "show", "a b"), "deployment name"),
        (("users", "keys", "revoke", "GOV_XYZ"), "prefix"),
        (("users", "keys", "create", "has space"), "user name"),
        (("users", "create", "has space", "--role", "admin"), "user name"),
        (("users", "create", "ok", "--role", "overlord"), "unknown role"),
    ],
)
def test_bad_arguments_are_one_line_and_non_zero(args: tuple[str, ...], needle: str) -> None:
    _one_line_error(*_run(*args), needle)
