"""Run every benchmark script in bench/ and write their tables to docs/benchmarks.md.

Usage: ``python -m bench [--only NAME ...] [--out docs/benchmarks.md]``. Each script
runs as its own process with its default arguments (the ones the targets are stated
for); its printed table goes into the results page with the machine it ran on.
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
ORDER = ["aligner", "audit", "ingest", "serving", "gate", "monitors", "dossier"]


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help=f"subset of {ORDER}")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    names = args.only or ORDER
    sections = []
    failed = 0
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"skip {name}: {script.name} not found", file=sys.stderr)
            continue
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - t0
        sys.stdout.write(res.stdout)
        if res.returncode != 0:
            failed += 1
            sys.stderr.write(res.stderr[-3000:])
        body = res.stdout.strip() or "(no output)"
        status = "" if res.returncode == 0 else f" — **failed (exit {res.returncode})**"
        sections.append(
            f"## {name}{status}\n\n`python bench/{script.name}` ({took:.0f} s)\n\n```\n{body}\n```\n"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "# Benchmark results\n\n"
        f"Written by `make bench` (`python -m bench`) on {stamp}.\n\n"
        f"Machine: {machine()}. Load from other processes makes these numbers noisy; "
        "each script states its targets beside its table.\n\n" + "\n".join(sections)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
