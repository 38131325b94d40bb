"""Run every benchmark script in bench/ and write their tables to docs/benchmarks-latest.md.

Usage: ``python -m bench [--only NAME ...] [--out PATH]``. Each script runs as its own
process with its default arguments (the ones the targets are stated for); its printed
table goes into a generated page (default ``docs/benchmarks-latest.md``, gitignored) with
the machine it ran on, the date and the load average. The curated docs/benchmarks.md is
edited by hand and is never written: ``--out`` refuses it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORDER = ["aligner", "audit", "ingest", "serving", "gate", "monitors", "dossier", "rollout"]
DEFAULT_OUT = ROOT / "docs" / "benchmarks-latest.md"
CURATED = ROOT / "docs" / "benchmarks.md"  # edited by hand: never written by the runner


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def check_out(path: Path) -> Path:
    """The output page, refused when it is the curated docs/benchmarks.md (also through a link)."""
    resolved = path.expanduser().resolve()
    if resolved == CURATED.resolve():
        raise ValueError(
            f"--out {path}: docs/benchmarks.md is the curated page, edited by hand; the runner writes "
            f"its tables to {DEFAULT_OUT.relative_to(ROOT)} (the default) or another file"
        )
    return resolved


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help=f"subset of {ORDER}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="the generated page (default docs/benchmarks-latest.md; never docs/benchmarks.md)")
    args = ap.parse_args(argv)
    try:
        args.out = check_out(args.out)
    except ValueError as exc:
        ap.error(str(exc))  # exit 2 with the message, before any benchmark runs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only or ORDER
    sections = []
    failed = 0
    load_before = load_average()
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"skip {name}: {script.name} not found", file=sys.stderr)
            continue
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        # rich tables wrap (and cut cells) at 80 columns when not on a terminal
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "220")}
        res = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, env=env)
        took = time.monotonic() - t0
        sys.stdout.write(res.stdout)
        if res.returncode != 0:
            failed += 1
            sys.stderr.write(res.stderr[-3000:])
        body = res.stdout.strip() or "(no output)"
        status = "" if res.returncode == 0 else f" — **failed (exit {res.returncode})**"
        sections.append(
            f"## {name}{status}\n\n`python bench/{script.name}` ({took:.0f} s, load average after: "
            f"{load_average()})\n\n```\n{body}\n```\n"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "# Benchmark results (generated)\n\n"
        f"Written by `make bench` (`python -m bench`) on {stamp}; regenerated on every run and not "
        "committed (gitignored). The curated page with the numbers and their discussion is "
        "[benchmarks.md](benchmarks.md).\n\n"
        f"Machine: {machine()}.\n\nLoad average at the start: {load_before}; at the end: {load_average()}. "
        "Load from other processes makes these numbers noisy; each script states its targets beside "
        "its table.\n\n" + "\n".join(sections)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
