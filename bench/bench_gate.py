"""Benchmarks of the evaluation gate's model-independent parts; prints a table.

    .venv/bin/python bench/bench_gate.py

Times the Great Expectations validation of a 200-row outputs table (first call, which
builds the context and suite, and the cached calls after it), the checkers over every
output, and the three suites' evaluation on synthetic outputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def _time(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    first_start = time.perf_counter()
    fn()
    first = time.perf_counter() - first_start
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs)


def main() -> None:
    from evaluators.checkers import run_checkers
    from evaluators.expectations import policy_specs, validate_frame
    from governance.policy import COMPLIANCE_CATEGORIES, load_default_policy

    policy, _ = load_default_policy()
    rows = []
    n = 200
    rng = np.random.default_rng(0)
    outputs = [f"Here is answer {i}. " * int(rng.integers(1, 20)) for i in range(n)]
    frame = pd.DataFrame({"output": outputs, "pii_output": [o if i % 5 == 0 else None for i, o in enumerate(outputs)]})
    for j, cat in enumerate(COMPLIANCE_CATEGORIES):
        frame[f"violation__{cat}"] = [float(rng.random() < 0.02) if i % 5 == j else np.nan for i in range(n)]
    specs = policy_specs(policy)
    first, cached = _time(lambda: validate_frame(frame, specs))
    rows.append(("GE validate, 200 rows", first, cached))
    first, cached = _time(lambda: [run_checkers(o, "call (555) 123-4567", policy.format) for o in outputs])
    rows.append(("all checkers, 200 outputs", first, cached))
    try:
        from evaluators.runner import bench_suites
    except ImportError:
        bench_suites = None
    if bench_suites is not None:
        rows.extend(bench_suites(policy))
    print(f"{'what':40s} {'first (s)':>10s} {'median after (s)':>17s}")
    for what, a, b in rows:
        print(f"{what:40s} {a:10.3f} {b:17.3f}")


if __name__ == "__main__":
    main()
