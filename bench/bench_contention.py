"""Two torch processes on one machine: a gate's generation and a training, together and one after the other.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_contention.py [--cases 48] [--examples 48]

The README tour starts a gate worker and then trains on the same machine. Both are torch
processes that, left to their defaults, each start one thread per core, and OpenMP's
default wait policy keeps idle threads spinning: two such processes on 2 cores spin
against each other. This bench runs the two workloads as real separate processes on
SmolLM2, scaled down to minutes:

- gate: the gate's batched greedy generation (``evaluators.runner.AlignerGenerator``, the
  default policy's decoding) of the reasoning suite's first ``--cases`` cases with the
  bare base model and with a token, as a gate decodes candidate and baseline rows;
- train: ``govern train sft`` on the first ``--examples`` examples of the shipped house-style set, one epoch.

It times each one alone, one after the other in both orders, and both started together
under three settings: the defaults before this change (threads = cores, OpenMP's default
wait policy: ``OMP_WAIT_POLICY`` unset, so idle threads spin a while before they sleep),
what `govern` sets now (``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set; the gate
job, a plain Python process here, gets it in its environment), and one thread each.
The target (issue 21): started together they finish within 1.2x of the time the two take one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOUSE = ROOT / "aligner" / "data" / "house_style" / "train.jsonl"


def gate_worker(cases: int, state: str) -> None:
    """The gate's generation: base rows and token rows of the reasoning suite, batched as the gate does."""
    import torch

    from aligner import attach
    from aligner.artifact import AlignerToken
    from aligner.providers import load_base_model
    from evaluators.runner import AlignerGenerator
    from evaluators.suites.base import get_suite
    from governance.policy import load_default_policy

    policy = load_default_policy()[0]
    model, tokenizer, digests = load_base_model("smollm2-135m-instruct", state_dir=state)
    attach(model, base_digest=digests.weights).set_token(None)
    gen = AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=policy.gate.max_new_tokens,
                           width=policy.gate.batch_size)
    shape = digests.shape
    g = torch.Generator().manual_seed(0)
    token = AlignerToken.create(torch.randn(1, shape.hidden_size, generator=g) * 0.02,
                                torch.zeros(shape.num_layers, shape.num_heads), base_model="smollm2-135m-instruct",
                                base_model_digest=digests.weights, tokenizer_digest=digests.tokenizer,
                                training_method="manual", seed=0)
    prompts = [c.prompt for c in get_suite("reasoning").load_cases()[:cases]]
    gen.generate(prompts + prompts, [None] * len(prompts) + [token] * len(prompts))


def _env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["HF_HUB_OFFLINE"] = "1"
    if setting == "now":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # what `govern` sets for itself unless the variable is set
    elif setting == "one thread each":
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def _commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    data = work / "train.jsonl"
    data.write_text("".join(HOUSE.read_text().splitlines(keepends=True)[: args.examples]))
    return {
        "gate": [sys.executable, __file__, "--worker", "gate", "--cases", str(args.cases), "--state", args.state],
        "train": [sys.executable, "-m", "governance.cli.main", "train", "sft", "--data", str(data), "--out",
                  str(work / "token"), "--epochs", "1", "--force"],
    }


def _run(cmds: dict[str, list[str]], names: list[str], setting: str, together: bool) -> dict[str, float]:
    """Wall seconds of each job and of the whole ("total")."""
    env = _env(setting)
    t0 = time.perf_counter()
    done: dict[str, float] = {}
    if together:
        procs = {n: subprocess.Popen(cmds[n], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True) for n in names}
        pending = dict(procs)
        while pending:
            for n, p in list(pending.items()):
                if p.poll() is not None:
                    done[n] = time.perf_counter() - t0
                    _check(n, p.returncode, p.stderr.read() if p.stderr else "")
                    del pending[n]
            time.sleep(0.2)
    else:
        for n in names:
            start = time.perf_counter()
            r = subprocess.run(cmds[n], cwd=ROOT, env=env, capture_output=True, text=True)
            _check(n, r.returncode, r.stderr)
            done[n] = time.perf_counter() - start
    done["total"] = time.perf_counter() - t0
    return done


def _check(name: str, code: int, err: str) -> None:
    if code != 0:
        raise SystemExit(f"{name} failed ({code}): {err[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=48, help="reasoning cases the gate job decodes (x2 rows)")
    parser.add_argument("--examples", type=int, default=48, help="house-style examples the training job uses")
    parser.add_argument("--state", default=os.environ.get("GOVERN_STATE_DIR", "state"))
    parser.add_argument("--worker", choices=["gate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "gate":
        gate_worker(args.cases, args.state)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmds = _commands(args, Path(tmp))
        rows: list[tuple[str, dict[str, float]]] = []
        print(f"{os.cpu_count()} cores; gate: {args.cases} reasoning cases x 2 rows; train: {args.examples} "
              "examples, 1 epoch", flush=True)
        for setting in ("before", "now"):
            rows.append((f"{setting}: gate then train", _run(cmds, ["gate", "train"], setting, False)))
            rows.append((f"{setting}: train then gate", _run(cmds, ["train", "gate"], setting, False)))
            rows.append((f"{setting}: together", _run(cmds, ["gate", "train"], setting, True)))
        rows.append(("one thread each: together", _run(cmds, ["gate", "train"], "one thread each", True)))
        print("\n| setting | gate s | train s | total s | together / one after the other |")
        print("|---|---|---|---|---|")
        for label, r in rows:
            setting = label.split(":")[0]
            seq = [v["total"] for lab, v in rows if lab.startswith(setting if setting != "one thread each" else "now")
                   and "together" not in lab]
            ratio = f"{r['total'] / (sum(seq) / len(seq)):.2f}" if "together" in label and seq else ""
            print(f"| {label} | {r['gate']:.0f} | {r['train']:.0f} | {r['total']:.0f} | {ratio} |", flush=True)
        print(json.dumps({label: r for label, r in rows}))


if __name__ == "__main__":
    main()
