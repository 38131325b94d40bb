"""Dependency audit with pip-audit against the locked requirements.

Offline-tolerant: where the advisory service cannot be reached (these machines reach
only the package index, not PyPI's JSON API or OSV), pip-audit reports every package
as "could not be audited"; the test then reports that and passes. It fails only on
known vulnerabilities found with advisory data available.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


@pytest.mark.slow
def test_locked_requirements_have_no_known_vulnerabilities() -> None:
    assert LOCK.exists(), "requirements.lock is missing: regenerate it with `make lock`"
    exe = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("pip-audit is not installed in this environment")
    res = subprocess.run(
        [exe, "-r", str(LOCK), "--no-deps", "--disable-pip", "--progress-spinner", "off", "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    print(out[-4000:])  # the report, visible with -s or on failure
    found = re.search(r"Found (\d+) known vulnerabilit", out)
    if found and int(found.group(1)) > 0:
        pytest.fail(f"pip-audit found {found.group(1)} known vulnerabilities:\n{res.stdout[-3000:]}")
    if res.returncode != 0 and "could not be audited" not in out and "No known vulnerabilities" not in out:
        # the tool itself failed without any advisory data: report, don't fail (offline-tolerant)
        pytest.skip(f"pip-audit could not run here: {out.strip().splitlines()[-1] if out.strip() else res.returncode}")
