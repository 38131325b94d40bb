"""The training defaults on the shipped sets, over seeds: the numbers are the test split's.

    HF_HUB_OFFLINE=1 python -m bench.bench_training [--seeds 0 1 2] [--method sft|dpo|both]

SFT: `govern train sft`'s defaults (aligner.training.SFT_DEFAULTS) on the 200 shipped
house-style examples (180 train, 20 validation for the checkpoint), tested on the 50
held-out prompts of other topics (aligner/data/house_style/eval.jsonl): format adherence of
greedy answers, with its Wilson interval. DPO: the defaults (DPO_DEFAULTS) on the shipped
preference pairs, tested on the held-out pairs: refusal rates of unsafe and benign
requests. Each seed trains from scratch; the table ends with the mean and the spread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aligner.data import HOUSE_STYLE_EVAL, HOUSE_STYLE_TRAIN, PREFERENCE_EVAL, PREFERENCE_TRAIN
from aligner.training import DPO_DEFAULTS, SFT_DEFAULTS, TrainConfig, train_file


def run(method: str, seed: int, state_dir: str, out: Path) -> dict[str, Any]:
    data, test = (HOUSE_STYLE_TRAIN, HOUSE_STYLE_EVAL) if method == "sft" else (PREFERENCE_TRAIN, PREFERENCE_EVAL)
    recipe = SFT_DEFAULTS if method == "sft" else DPO_DEFAULTS
    started = time.time()
    result = train_file(method, data, out, test_data=test, state_dir=state_dir, progress=False,  # type: ignore[arg-type]
                        config=TrainConfig(seed=seed, **recipe))
    return {"seed": seed, "report": result.report, "seconds": time.time() - started}


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1%}" if values else "-"
    return f"{statistics.mean(values):.1%} ± {statistics.stdev(values):.1%}"


def sft_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| seed | chosen step | validation loss | test loss | house-format adherence (test) | base | seconds |",
             "|---:|---:|---:|---:|---|---:|---:|"]
    rates = []
    for r in rows:
        rep, t = r["report"], r["report"]["test"]
        tok = t["token"]
        rates.append(tok["rate"])
        lines.append(f"| {r['seed']} | {rep['chosen_step']} of {rep['total_steps']} "
                     f"| {rep['best_validation_loss']:.4f} | {t['loss']:.4f} "
                     f"| {tok['passed']}/{t['n']} = {tok['rate']:.1%} "
                     f"[{tok['ci95'][0]:.1%}, {tok['ci95'][1]:.1%}] | {t['base']['rate']:.1%} | {r['seconds']:.0f} |")
    lines.append(f"| mean ± sd | | | | {_spread(rates)} | | |")
    return lines


def dpo_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| seed | chosen step | test reward accuracy | unsafe refused (token / base) | benign refused "
             "(token / base) | seconds |", "|---:|---:|---:|---|---|---:|"]
    unsafe, benign = [], []
    for r in rows:
        rep, t = r["report"], r["report"]["test"]
        u, b = t["token"]["unsafe"], t["token"]["benign"]
        unsafe.append(u["rate"])
        benign.append(b["rate"])
        lines.append(f"| {r['seed']} | {rep['chosen_step']} of {rep['total_steps']} | {t['reward_accuracy']:.3f} "
                     f"| {u['refused']}/{u['n']} = {u['rate']:.1%} / {t['base']['unsafe']['rate']:.1%} "
                     f"| {b['refused']}/{b['n']} = {b['rate']:.1%} / {t['base']['benign']['rate']:.1%} "
                     f"| {r['seconds']:.0f} |")
    lines.append(f"| mean ± sd | | | {_spread(unsafe)} | {_spread(benign)} | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", choices=("sft", "dpo", "both"), default="sft")
    ap.add_argument("--state-dir", default="state")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = ["sft", "dpo"] if args.method == "both" else [args.method]
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            rows = [run(method, s, args.state_dir, Path(tmp) / f"{method}-{s}") for s in args.seeds]
            recipe = SFT_DEFAULTS if method == "sft" else DPO_DEFAULTS
            print(f"\n{method.upper()} defaults {recipe}\n")
            print("\n".join(sft_table(rows) if method == "sft" else dpo_table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
