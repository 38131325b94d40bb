"""Every `govern` process sleeps OpenMP's idle threads instead of spinning, unless told otherwise.

Two torch processes on the same cores with OpenMP's default spin-wait steal each other's
time (bench/bench_contention.py measures it); `governance.cli` sets OMP_WAIT_POLICY
before any command can import torch.
"""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from governance.cli.main import app

PROBE = "import governance.cli, os, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"


def _probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_govern_processes_default_to_a_passive_wait_policy_and_an_operator_choice_wins() -> None:
    assert _probe().startswith("PASSIVE ")
    assert _probe(OMP_WAIT_POLICY="ACTIVE").startswith("ACTIVE ")


def test_every_torch_command_takes_torch_threads() -> None:
    for command in (["train", "sft"], ["train", "dpo"], ["worker"], ["serve"]):
        r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "--torch-threads" in r.output, (command, r.output)
