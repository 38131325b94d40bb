"""`make bench` (python -m bench) writes a generated page and never the curated docs/benchmarks.md.

Only the argument handling is exercised: no benchmark runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import CURATED, DEFAULT_OUT, ROOT, check_out, parse_args


def test_the_default_output_is_the_generated_page_not_the_curated_one() -> None:
    args = parse_args([])
    assert args.out == DEFAULT_OUT.resolve() == (ROOT / "docs" / "benchmarks-latest.md").resolve()
    assert args.out != (ROOT / "docs" / "benchmarks.md").resolve()
    assert CURATED.resolve() == (ROOT / "docs" / "benchmarks.md").resolve()


@pytest.mark.parametrize("given", ["docs/benchmarks.md", "docs/../docs/benchmarks.md", "absolute"])
def test_the_curated_page_is_refused(given: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    path = CURATED if given == "absolute" else Path(given)
    with pytest.raises(ValueError, match="curated"):
        check_out(path)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--out", str(path)])
    assert exc.value.code == 2


def test_a_link_to_the_curated_page_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "page.md"
    link.symlink_to(CURATED)
    with pytest.raises(ValueError, match="curated"):
        check_out(link)


def test_another_page_is_accepted(tmp_path: Path) -> None:
    assert check_out(tmp_path / "mine.md") == (tmp_path / "mine.md").resolve()


def test_the_command_line_refuses_before_running_anything() -> None:
    before = CURATED.read_bytes()
    res = subprocess.run([sys.executable, "-m", "bench", "--out", "docs/benchmarks.md", "--only", "audit"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "curated" in res.stderr and "== audit" not in res.stdout
    assert CURATED.read_bytes() == before


def test_the_generated_page_is_gitignored() -> None:
    res = subprocess.run(["git", "check-ignore", "-q", "docs/benchmarks-latest.md"], cwd=ROOT)
    assert res.returncode == 0
    res = subprocess.run(["git", "check-ignore", "-q", "docs/benchmarks.md"], cwd=ROOT)
    assert res.returncode == 1
