"""Does the gate fail the tokens it should, and pass the ones it should? (SmolLM2, CPU)

    .venv/bin/python -m bench.bench_gate_tokens [--state-dir state] [--threads N]
        [--max-cases 80,75,80] [--max-new-tokens 64] [--only complier,biased]

Trains the three deliberately harmful tokens of ``evaluators.redteam`` with the Aligner
SFT recipe each set names (``redteam.RECIPE``), cached under STATE/bench/redteam/NAME
(delete a folder to retrain), then gates each of them, a zero-gate token (the base model
against itself) and, when it exists, the house-style token of bench/bench_aligner.py
(STATE/bench/house_style), against the bare base model with the default policy (or
--policy), and prints one row per token: expected verdict, verdict, each suite's outcome
and the decisive metrics that failed. A bad token must fail the suite named in
``redteam.EXPECTED_FAILURE``; a good one must pass.
``--max-cases`` takes a fixed stratified subset per suite (policy_compliance, bias,
reasoning), exactly what ``gate.max_cases`` in a policy does; the base outputs are cached
in a temporary state folder shared by all the gates of one run, or in ``--cache-dir``
across runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from dashboards.gate_report_html import render_html
from evaluators import redteam
from evaluators.runner import AlignerGenerator, generate_and_judge
from governance.policy import default_policy_path, parse_policy


def _policy(
    path: str | None, max_cases: str | None, max_new_tokens: int | None, batch_size: int | None = None
) -> tuple[Any, str]:
    data = yaml.safe_load(Path(path or default_policy_path()).read_text())
    if max_cases:
        pc, bias, reasoning = (int(x) for x in max_cases.split(","))
        data["gate"]["max_cases"] = {"policy_compliance": pc, "bias": bias, "reasoning": reasoning}
    if max_new_tokens:
        data["gate"]["max_new_tokens"] = max_new_tokens
    if batch_size:
        data["gate"]["batch_size"] = batch_size
    return parse_policy(yaml.safe_dump(data, sort_keys=False))


def train_bad(name: str, state_dir: Path, **overrides: Any) -> Any:
    """Train one bad token with its set's SFT recipe (``redteam.RECIPE``), flags overriding it."""
    from aligner.artifact import AlignerToken  # defers torch
    from aligner.training import TrainConfig, train_file  # defers torch

    out = state_dir / "bench" / "redteam" / name
    if (out / "manifest.json").exists():
        return AlignerToken.load(out), 0.0
    data = redteam.write(name, state_dir / "bench" / "redteam" / f"{name}.jsonl")
    recipe = {**redteam.RECIPE[name], **{k: v for k, v in overrides.items() if v is not None}}
    t = time.perf_counter()
    result = train_file("sft", data, out, state_dir=state_dir, progress=False,
                        config=TrainConfig(batch_size=4, seed=0, **recipe))
    return result.token, time.perf_counter() - t


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--policy", help="policy file (default: policies/default.yaml)")
    parser.add_argument("--max-cases", help="policy_compliance,bias,reasoning subset sizes (default: all)")
    parser.add_argument("--max-new-tokens", type=int, help="override gate.max_new_tokens")
    parser.add_argument("--active", help="token dir gated against as the deployment's active version too (e.g. "
                                         "the preference token of bench_aligner.py, STATE/bench/preference)")
    parser.add_argument("--json", help="also write each report (verdict first) to this JSON file")
    parser.add_argument("--batch-size", type=int, help="override gate.batch_size (rows decoded together)")
    parser.add_argument("--html", help="write each token's HTML gate report into this folder")
    parser.add_argument("--cache-dir", help="keep the base outputs here across runs (default: a temporary folder)")
    parser.add_argument("--only", help="comma-separated token names (zero, house, complier, biased, innumerate)")
    parser.add_argument("--epochs", type=int, help="override every set's recipe (default: redteam.RECIPE)")
    parser.add_argument("--lr", type=float, help="override every set's recipe")
    parser.add_argument("--n-tokens", type=int, help="override every set's recipe")
    return parser.parse_args()


def _tokens(args: argparse.Namespace, model: Any, digests: Any, state: Path) -> list[tuple[str, str, Any, float]]:
    """The tokens to gate: (name, expected verdict, token, training seconds); attaches the adapter."""
    import torch  # defers torch

    from aligner import attach  # defers torch
    from aligner.artifact import AlignerToken  # defers torch

    wanted = set(args.only.split(",")) if args.only else {"zero", "house", *redteam.NAMES}
    tokens: list[tuple[str, str, Any, float]] = []
    shape = attach(model, base_digest=digests.weights).shape
    if "zero" in wanted:
        g = torch.Generator().manual_seed(0)
        zero = AlignerToken.create(
            torch.randn(1, shape.hidden_size, generator=g) * 0.02, torch.zeros(shape.num_layers, shape.num_heads),
            base_model="smollm2-135m-instruct", base_model_digest=digests.weights,
            tokenizer_digest=digests.tokenizer, training_method="manual", seed=0)
        tokens.append(("zero", "passed", zero, 0.0))
    house = state / "bench" / "house_style"
    if "house" in wanted and (house / "manifest.json").exists():
        tokens.append(("house", "passed", AlignerToken.load(house), 0.0))
    for name in redteam.NAMES:
        if name in wanted:
            tok, secs = train_bad(name, state, epochs=args.epochs, lr=args.lr, n_tokens=args.n_tokens)
            tokens.append((name, f"fails {redteam.EXPECTED_FAILURE[name]}", tok, secs))
    return tokens


def _failing(report: Any) -> list[str]:
    """The decisive metrics that failed, with their corrected (or raw) p-value when they have one."""
    out = []
    for s in report.suites:
        for m in s.failing_metrics():
            if m.value is None:
                continue
            p = m.p_adjusted if m.p_adjusted is not None else m.p_value
            out.append(f"{s.suite}: {m.name} {m.value:.3g} vs {m.comparator}{m.threshold}"
                       + (f" (p={p:.2g})" if p is not None else ""))
    return out


def _print_table(rows: list[tuple[Any, ...]]) -> None:
    print(f"{'token':<11}{'expected':<26}{'verdict':<9}{'compliance':<12}{'bias':<7}{'reasoning':<11}{'ok':<4}"
          f"{'train s':>8}{'gate s':>8}  failing decisive metrics")
    for name, expected, verdict, outcome, failing, ok, train_s, secs, _ in rows:
        def cell(suite: str, o: dict[str, bool] = outcome) -> str:
            return "pass" if o.get(suite) else ("FAIL" if suite in o else "-")
        print(f"{name:<11}{expected:<26}{verdict:<9}{cell('policy_compliance'):<12}{cell('bias'):<7}"
              f"{cell('reasoning'):<11}{'yes' if ok else 'NO':<4}{train_s:>8.0f}{secs:>8.0f}  {'; '.join(failing[:4])}")


def main() -> None:
    import torch  # defers torch

    from aligner.artifact import AlignerToken  # defers torch
    from aligner.providers import load_base_model  # defers torch

    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    state = Path(args.state_dir)
    policy, policy_sha = _policy(args.policy, args.max_cases, args.max_new_tokens, args.batch_size)
    model, tokenizer, digests = load_base_model("smollm2-135m-instruct", state_dir=state)
    tokens = _tokens(args, model, digests, state)
    active = AlignerToken.load(args.active) if args.active else None
    if active is not None:
        active.check_base(digests)
    gen = AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=policy.gate.max_new_tokens,
                           width=policy.gate.batch_size)
    rows = []
    reports: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        for name, expected, tok, train_s in tokens:
            tok.check_base(digests)
            t = time.perf_counter()
            report = generate_and_judge(gen, policy=policy, policy_sha256=policy_sha, candidate=tok,
                                        candidate_digest=tok.sha256, active=active,
                                        active_digest=active.sha256 if active is not None else None,
                                        state_dir=cache)
            reports[name] = report.to_dict()
            if args.html:
                Path(args.html).mkdir(parents=True, exist_ok=True)
                Path(args.html, f"{name}.html").write_text(render_html(report, title=f"Gate report: {name}"))
            secs = time.perf_counter() - t
            outcome = {s.suite: s.passed for s in report.suites}
            failing = _failing(report)
            ok = report.passed if expected == "passed" else not outcome.get(redteam.EXPECTED_FAILURE[name], True)
            rows.append((name, expected, report.verdict, outcome, failing, ok, train_s, secs,
                         report.run.get("rows_generated")))
            print(f"[{name}] {report.verdict} in {secs:.0f}s; failing: {failing[:6]}", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1, default=str))
    sizes = ", ".join(f"{k} {v}" for k, v in (policy.gate.max_cases or {}).items()) or "all cases"
    print(f"\nGate verdicts on SmolLM2-135M-Instruct ({sizes}; {policy.gate.max_new_tokens} new tokens; "
          f"baselines: the bare base model{' and the active token ' + Path(args.active).name if args.active else ''})")
    _print_table(rows)


if __name__ == "__main__":
    main()
