"""Benchmarks of the evaluation gate; prints a table.

    .venv/bin/python -m bench.bench_gate                       # model-free parts
    .venv/bin/python -m bench.bench_gate --model smollm2 [--limit N] [--state-dir state]

Model-free: the Great Expectations validation of a 200-row outputs table (first call,
which imports GE and builds the context and suite, and the cached calls after it), the
checkers over 200 outputs, and each suite's evaluation on synthetic outputs.

With ``--model smollm2`` (run ``govern model prepare`` first): a zero-gate token
against the bare base model. It times (1) the first gate, which generates the base
outputs too, (2) the gate again with the base outputs cached, and (3) the raw batched
generation those cached gates need (the same prompts, groups and batch size, each
case's own decoding budget, through ``AlignerGenerator.generate``), and
prints the ratio (2)/(3), whose target is <= 1.15, and the verdict (which must be
"passed": the base model against itself).
``--limit N`` keeps the first N cases of each suite (the full gate is 1,777 cases).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pandas as pd

from evaluators.checkers import run_checkers
from evaluators.embeddings import hashing_embedder
from evaluators.expectations import policy_specs, validate_frame
from evaluators.runner import AlignerGenerator, generate_and_judge, plan_rows
from evaluators.suites.base import get_suite
from evaluators.suites.bias import BiasSuite
from governance.policy import COMPLIANCE_CATEGORIES, load_default_policy
from tests.evaluators import synthetic


def _time(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs)


def model_free() -> list[tuple[str, float, float]]:
    policy, _ = load_default_policy()
    rows = []
    n = 200
    rng = np.random.default_rng(0)
    outputs = [f"Here is answer {i}. " * int(rng.integers(1, 20)) for i in range(n)]
    frame = pd.DataFrame({"output": outputs, "pii_output": [o if i % 5 == 0 else None for i, o in enumerate(outputs)]})
    for j, cat in enumerate(COMPLIANCE_CATEGORIES):
        frame[f"violation__{cat}"] = [float(rng.random() < 0.02) if i % 5 == j else np.nan for i in range(n)]
    specs = policy_specs(policy)
    rows.append(("GE validate, 200 rows", *_time(lambda: validate_frame(frame, specs))))
    rows.append(("all checkers, 200 outputs",
                 *_time(lambda: [run_checkers(o, "call (555) 123-4567", policy.format) for o in outputs])))
    for suite in (get_suite("policy_compliance"), BiasSuite(embedder=hashing_embedder), get_suite("reasoning")):
        cases = suite.load_cases()
        base = synthetic.base_outputs(cases)

        def evaluate(s: Any = suite, c: Any = cases, b: Any = base) -> object:
            return s.evaluate(c, b, {"base": b}, policy)

        rows.append((f"evaluate {suite.name} ({len(cases)} cases)", *_time(evaluate, repeat=1)))
    return rows


def with_model(
    limit: int | None, state_dir: str, static: bool = False, cache_dir: str | None = None
) -> list[tuple[str, float, float]]:
    import torch  # defers torch

    from aligner import attach  # defers torch
    from aligner.artifact import AlignerToken  # defers torch
    from aligner.generation import generate  # defers torch
    from aligner.providers import load_base_model  # defers torch

    policy, policy_sha = load_default_policy()
    model, tokenizer, digests = load_base_model("smollm2-135m-instruct", state_dir=state_dir)
    adapter = attach(model, base_digest=digests.weights)
    adapter.set_token(None)
    shape = adapter.shape
    g = torch.Generator().manual_seed(0)
    # Gates at zero: the token changes nothing, so this is the base model against itself.
    zero = AlignerToken.create(
        torch.randn(1, shape.hidden_size, generator=g) * 0.02, torch.zeros(shape.num_layers, shape.num_heads),
        base_model="smollm2-135m-instruct", base_model_digest=digests.weights, tokenizer_digest=digests.tokenizer,
        training_method="manual", seed=0,
    )
    gen = AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=policy.gate.max_new_tokens,
                           width=policy.gate.batch_size)
    suites = [get_suite(n) for n in ("policy_compliance", "bias", "reasoning")]
    cases = {s.name: s.load_cases()[:limit] if limit else s.load_cases() for s in suites}
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = cache_dir or tmp
        common: dict[str, Any] = dict(policy=policy, policy_sha256=policy_sha, candidate=zero,
                                      candidate_digest=zero.sha256, state_dir=state, suites=suites, cases=cases)
        t = time.perf_counter()
        first = generate_and_judge(gen, **common)
        rows.append((f"gate, base uncached ({first.run['rows_generated']} rows)", time.perf_counter() - t, 0.0))
        t = time.perf_counter()
        second = generate_and_judge(gen, **common)
        cached = time.perf_counter() - t
        rows.append((f"gate, base cached ({second.run['rows_generated']} rows)", cached, 0.0))
        # The raw generation the cached gate needs: the same prompts in the same groups,
        # decoded the same way (continuous batching, policy.gate.batch_size rows at a time).
        groups = plan_rows(cases, {n: ["candidate"] for n in cases}, policy.gate.batch_size)
        t = time.perf_counter()
        for group in groups:
            prompts = [cases[r.suite][r.index].prompt for r in group]
            # each case's own decoding budget, as the gate decodes it (bias decisions: 16)
            gen.generate(prompts, [zero] * len(prompts),
                         max_new_tokens=[cases[r.suite][r.index].meta.get("max_new_tokens") for r in group])
        raw = time.perf_counter() - t
        rows.append(("raw batched generation, same prompts and groups", raw, 0.0))
        if static:
            # For reference: model.generate over fixed batches of the same size, each running
            # until its longest row is done (what the gate did before continuous batching).
            t = time.perf_counter()
            for group in groups:
                prompts = [cases[r.suite][r.index].prompt for r in group]
                generate(model, tokenizer, prompts, row_tokens=[cast(Any, zero)] * len(prompts),
                         max_new_tokens=policy.gate.max_new_tokens, batch_size=policy.gate.batch_size)
            rows.append(("model.generate, same prompts and batch size", time.perf_counter() - t, 0.0))
        rows.append(("ratio cached gate / raw generation (target <= 1.15)", cached / raw, 0.0))
        print(f"verdict (zero token vs base): {second.verdict}; digests equal: "
              f"{first.evidence_digest == second.evidence_digest}")
        for s in second.suites:
            print(f"  {s.suite}: {'passed' if s.passed else 'FAILED'}; notes: {s.notes}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["none", "smollm2"], default="none")
    parser.add_argument("--limit", type=int, default=None, help="first N cases of each suite")
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--static", action="store_true", help="also time model.generate on fixed batches")
    parser.add_argument("--cache-dir", help="keep the base outputs here (bench_gate_tokens can reuse them); "
                                            "default: a temporary folder")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch  # defers torch

        torch.set_num_threads(args.threads)
    rows = model_free() if args.model == "none" else with_model(args.limit, args.state_dir, args.static, args.cache_dir)
    print(f"{'what':58s} {'first / value':>14s} {'median after':>13s}")
    for what, a, b in rows:
        print(f"{what:58s} {a:14.3f} {b:13.3f}")


if __name__ == "__main__":
    main()
