"""Bad configuration gives one clear line, not a traceback; the embedded servers come and go cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from governance.cli.main import app
from governance.settings import DEFAULT_SESSION_SECRET, Settings, SettingsError, get_settings, reset_settings_cache

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _govern(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERN_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "governance.cli.main", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_malformed_database_url_is_one_clear_line(tmp_path: Path) -> None:
    res = _govern(["db", "upgrade"], {"GOVERN_DATABASE_URL": "mysql://root@localhost/x"})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "GOVERN_DATABASE_URL" in res.stderr and "postgresql+psycopg://" in res.stderr


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    res = _govern(["db", "upgrade"], {"GOVERN_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "cannot reach PostgreSQL at" in res.stderr and "GOVERN_DATABASE_URL" in res.stderr


def test_unwritable_state_folder_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = _govern(["services", "up"], {"GOVERN_STATE_DIR": str(blocker / "state")})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "state folder" in res.stderr and "GOVERN_STATE_DIR" in res.stderr


def test_production_refuses_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="GOVERN_SESSION_SECRET"):
        Settings(
            environment="production",
            database_url="postgresql+psycopg://u@h/db",
            redis_url="redis://h:6379/0",
            session_secret=SecretStr(DEFAULT_SESSION_SECRET),
        )
    ok = Settings(
        environment="production",
        database_url="postgresql://u@h/db",
        redis_url="redis://h:6379/0",
        session_secret=SecretStr("x" * 32),
        push_secret=SecretStr("p" * 32),
    )
    assert ok.database_url == "postgresql+psycopg://u@h/db"  # normalized to the psycopg 3 driver
    monkeypatch.setenv("GOVERN_ENVIRONMENT", "production")
    monkeypatch.setenv("GOVERN_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("GOVERN_REDIS_URL", "redis://h:6379/0")
    reset_settings_cache()
    try:
        with pytest.raises(SettingsError, match="GOVERN_SESSION_SECRET"):
            get_settings()
    finally:
        reset_settings_cache()


def test_help_lists_the_command_groups() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for group in [
        "services",
        "db",
        "users",
        "model",
        "train",
        "submit",
        "gate",
        "review",
        "deployments",
        "promote",
        "rollback",
        "freeze",
        "unfreeze",
        "api",
        "worker",
        "beat",
        "serve",
        "audit",
        "demo",
    ]:
        assert group in res.output, group



def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERN_")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_a_command_module_that_does_not_import_fails_loudly() -> None:
    # every command is registered by a plain import: a broken module is an error, never a
    # command quietly listed as "not built yet"
    res = _python(
        "import sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'governance.cli.audit_cmds':\n"
        "            raise ImportError('audit_cmds is broken on purpose')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import governance.cli.main\n"
    )
    assert res.returncode != 0
    assert "ImportError: audit_cmds is broken on purpose" in res.stderr, res.stderr[-2000:]


def test_help_loads_no_model_stack() -> None:
    # the commands that need torch import it when they run, so `govern --help` stays fast
    res = _python(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from governance.cli.main import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_services_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    env = {"GOVERN_STATE_DIR": str(tmp_path / "state")}
    up = _govern(["services", "up"], env, timeout=120)
    assert up.returncode == 0, up.stderr
    again = _govern(["services", "up"], env, timeout=60)  # idempotent
    assert again.returncode == 0, again.stderr
    status = _govern(["services", "status"], env)
    assert "running (embedded" in status.stdout
    upgrade = _govern(["db", "upgrade"], env, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "revision" in upgrade.stdout
    import json

    record = json.loads((tmp_path / "state" / "services" / "services.json").read_text())
    pids = [int(record["postgresql"]["pid"]), int(record["redis"]["pid"])]
    down = _govern(["services", "down"], env)
    assert down.returncode == 0, down.stderr
    from governance.embedded import pid_alive

    assert not any(pid_alive(p) for p in pids)
    # no postgres or redis process still uses this state folder
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
    assert "stopped" in _govern(["services", "status"], env).stdout


def test_compose_file_names_every_role() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert {"postgres", "redis", "api", "worker", "beat", "serving"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
