"""The whole human story with the CLI alone, as three people, against a real uvicorn server.

`govern users create` (bootstrap, direct to the database) makes an admin, an ML engineer and a
compliance officer; then every action goes through the HTTP API with each person's key:
create a deployment, submit, approve, promote, roll back, freeze, with a clear message at
each refusal. The gate itself belongs to the evaluators; here it is passed through the
same service functions the gate worker calls.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from governance.cli.main import app as cli
from tests.governance.conftest import POLICY_TEXT, World, uid


@pytest.fixture()
def server(settings_env: None) -> Iterator[str]:
    from governance.api.app import create_app
    from governance.settings import get_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(get_settings()), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _govern(url: str, key: str | None, *args: str) -> Any:
    env = {"GOVERN_API_URL": url, "GOVERN_API_KEY": key or "", "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env)


def _user(url: str, role: str) -> tuple[str, str]:
    name = uid(role.split("_")[0])
    r = _govern(url, None, "users", "create", name, "--role", role)
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    assert key.startswith("gov_")
    return name, key


def _token_dir(world: World, tmp_path: Path) -> Path:
    from aligner.artifact import AlignerToken

    out = tmp_path / uid("tok")
    AlignerToken.from_bytes(world.artifact()).save(out)
    return out


def test_three_people_with_the_cli(server: str, world: World, tmp_path: Path) -> None:
    _, admin = _user(server, "admin")
    _, eng = _user(server, "ml_engineer")
    _, officer = _user(server, "compliance_officer")
    dep = uid("cli-dep")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)

    r = _govern(server, eng, "deployments", "create", dep, "--policy", str(policy), "--base-model", world.base_name)
    assert r.exit_code == 1 and "role ml_engineer may not" in r.output and "403" in r.output
    r = _govern(server, admin, "deployments", "create", dep, "--policy", str(policy), "--base-model", world.base_name)
    assert r.exit_code == 0 and f"created deployment {dep}" in r.output, r.output

    versions = []
    for _ in range(2):
        r = _govern(
            server, eng, "submit", str(_token_dir(world, tmp_path)), "--adapter", f"{dep}-line", "--deployment", dep
        )
        assert r.exit_code == 0 and "submitted version" in r.output, r.output
        versions.append(int(r.output.strip().splitlines()[-1]))
    v1, v2 = versions

    r = _govern(server, officer, "review", "approve", str(v1), "--comment", "too early")
    assert r.exit_code == 1 and "is submitted" in r.output and "409" in r.output, r.output
    for v in versions:
        world.gate(v)
    r = _govern(server, eng, "review", "approve", str(v1), "--comment", "my own")
    assert r.exit_code == 1 and "may not" in r.output
    for v in versions:
        r = _govern(server, officer, "review", "approve", str(v), "--comment", "evidence reviewed")
        assert r.exit_code == 0 and f"approved version {v}" in r.output, r.output

    r = _govern(server, officer, "promote", str(v1), "--deployment", dep)
    assert r.exit_code == 1 and "403" in r.output
    r = _govern(server, eng, "promote", str(v1), "--deployment", dep)
    assert r.exit_code == 0 and f"version {v1} is active on {dep}, generation 1" in r.output, r.output
    r = _govern(server, officer, "rollback", "--deployment", dep, "--reason", "drift")
    assert r.exit_code == 1 and "no earlier approved version" in r.output, r.output
    r = _govern(server, eng, "promote", str(v2), "--deployment", dep)
    assert r.exit_code == 0 and "generation 2" in r.output and f"version {v1} superseded" in r.output

    r = _govern(server, eng, "rollback", "--deployment", dep, "--reason", "drift")
    assert r.exit_code == 1 and "role ml_engineer may not" in r.output
    r = _govern(server, officer, "rollback", "--deployment", dep, "--reason", "refusals went up")
    assert r.exit_code == 0 and f"version {v2} -> {v1}, generation 3" in r.output, r.output

    r = _govern(server, officer, "freeze", "--deployment", dep, "--until", "2999-01-01T00:00:00Z")
    assert r.exit_code == 0 and "frozen until 2999" in r.output, r.output
    r = _govern(server, officer, "unfreeze", "--deployment", dep)
    assert r.exit_code == 0 and "unfrozen" in r.output
    r = _govern(server, eng, "deployments", "show", dep)
    assert r.exit_code == 0 and f"active: version {v1}" in r.output and "generation: 3" in r.output, r.output
    assert "refusals went up" in r.output

    r = _govern(server, "gov_wrongkey_xxxxxxxx", "promote", str(v2), "--deployment", dep)
    assert r.exit_code == 1 and "401" in r.output
    r = _govern("http://127.0.0.1:9", eng, "promote", str(v2), "--deployment", dep)
    assert r.exit_code == 2 and "cannot reach the governance API" in r.output
