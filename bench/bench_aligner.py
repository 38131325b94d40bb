"""Benchmark of the Aligner method on SmolLM2-135M-Instruct (CPU): prints a table.

    python bench/bench_aligner.py                       # overhead, swap latency, memory
    python bench/bench_aligner.py --train both          # + SFT/DPO on the shipped sets and held-out results
    python bench/bench_aligner.py --house-token DIR --preference-token DIR   # evaluate trained tokens

Targets (issue 3): generation overhead of an attached 1-token Aligner <= 5% fewer tokens/s
(batch 1 and 8, 64 new tokens); swap p50/p99 < 1 ms; house-style adherence >= 90%;
preference token (<= 10 tokens) raises unsafe refusals >= 30 points with benign refusals
up <= 5 points; SFT on the house-style set < 10 minutes.
Numbers on a shared 2-core machine are noisy: runs are interleaved and the median is kept.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner import AlignerConfig, attach, detach
from aligner.artifact import AlignerToken
from aligner.data import HOUSE_STYLE_EVAL, HOUSE_STYLE_TRAIN, PREFERENCE_EVAL, PREFERENCE_TRAIN
from aligner.evaluation import evaluate_house_style, evaluate_refusals
from aligner.generation import encode_chat
from aligner.providers import load_base_model
from aligner.training import TrainConfig, train_file

console = Console()
PROMPTS = [
    "Explain how a refrigerator keeps food cold.", "What are three tips for a job interview?",
    "Why is the sky blue?", "Describe the water cycle.", "How do I start learning to cook?",
    "What is machine learning?", "Give me advice on saving money.", "What causes earthquakes?",
]


def _token(digests: Any, n: int, seed: int) -> AlignerToken:
    g = torch.Generator().manual_seed(seed)
    s = digests.shape
    return AlignerToken.create(
        torch.randn(n, s.hidden_size, generator=g), torch.randn(s.num_layers, s.num_heads, generator=g) * 0.1,
        base_model=digests.name, base_model_digest=digests.weights, tokenizer_digest=digests.tokenizer,
        training_method="random",
    )


@torch.no_grad()
def _gen_seconds(model: Any, enc: Any, new_tokens: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a machine shared with other jobs the CPU
    time is the fair measure of the work done; wall time mostly measures the neighbours."""
    start, cpu = time.perf_counter(), time.process_time()
    model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=model.generation_config.pad_token_id)
    return time.perf_counter() - start, time.process_time() - cpu


def bench_overhead(model: Any, tokenizer: Any, digests: Any, reps: int, new_tokens: int) -> list[dict[str, Any]]:
    rows = []
    tokens = {1: _token(digests, 1, 1), 10: _token(digests, 10, 2)}
    for batch in (1, 8):
        enc = encode_chat(tokenizer, PROMPTS[:batch])
        _gen_seconds(model, enc, 8)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {"bare": [], "n=1": [], "n=10": []}
        for _ in range(reps):  # interleaved, so that load from other processes hits all variants alike
            times["bare"].append(_gen_seconds(model, enc, new_tokens))
            adapter = attach(model, AlignerConfig())
            for n, tok in tokens.items():
                adapter.set_token(tok)
                times[f"n={n}"].append(_gen_seconds(model, enc, new_tokens))
            detach(model)
        bare_wall = statistics.median(w for w, _ in times["bare"])
        bare_cpu = statistics.median(c for _, c in times["bare"])
        for name, ts in times.items():
            wall = statistics.median(w for w, _ in ts)
            cpu = statistics.median(c for _, c in ts)
            rows.append({
                "batch": batch, "variant": name, "tokens_per_s": batch * new_tokens / wall,
                "tokens_per_cpu_s": batch * new_tokens / cpu,
                "overhead_pct": 100.0 * (cpu - bare_cpu) / bare_cpu,
                "wall_overhead_pct": 100.0 * (wall - bare_wall) / bare_wall,
                "runs": [(round(w, 3), round(c, 3)) for w, c in ts],
            })
    return rows


def bench_swap(model: Any, digests: Any, swaps: int = 1000) -> dict[str, float]:
    adapter = attach(model)
    versions = [_token(digests, 1, seed) for seed in range(100)]
    ids = torch.randint(3, 1000, (1, 8))
    lat: list[float] = []
    for i in range(swaps):
        tok = versions[i % len(versions)] if i % 10 else None
        start = time.perf_counter_ns()
        adapter.set_token(tok)
        lat.append((time.perf_counter_ns() - start) / 1e6)
    # What the first forward after a swap pays: K_p/V_p projections of every layer (then cached).
    with torch.no_grad():
        adapter.set_token(versions[0])
        model(input_ids=ids)
        warm = []
        cold = []
        for i in range(20):  # CPU time, see _gen_seconds
            start = time.process_time()
            model(input_ids=ids)
            warm.append(time.process_time() - start)
            adapter.set_token(versions[i + 1])
            start = time.process_time()
            model(input_ids=ids)
            cold.append(time.process_time() - start)
    detach(model)
    lat.sort()
    return {
        "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)], "max_ms": lat[-1],
        "first_forward_extra_ms": 1000 * (statistics.median(cold) - statistics.median(warm)),
    }


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_memory(digests: Any, count: int = 10_000) -> dict[str, float]:
    one = _token(digests, 1, 0)
    archive = one.to_bytes()
    gc.collect()
    before = _rss_bytes()
    resident = [AlignerToken.from_bytes(_token(digests, 1, i).to_bytes()) for i in range(count)]
    gc.collect()
    after = _rss_bytes()
    tensor_bytes = one.prefix.numel() * 4 + one.gates.numel() * 4
    del resident
    return {
        "params": one.manifest.param_count, "tensor_bytes": tensor_bytes, "archive_bytes": len(archive),
        "versions": count, "rss_growth_mb": (after - before) / 2**20, "rss_per_version_bytes": (after - before) / count,
    }


def balance_labels(src: str | Path, dst: Path) -> Path:
    """The rows of ``src`` followed by (k - 1) more copies of each label's rows, k = round(largest
    label count / its count): the shipped preference set has 105 unsafe and 45 benign pairs,
    so the benign pairs appear twice (90) and the refusals do not drown them."""
    rows = [json.loads(line) for line in Path(src).read_text().splitlines() if line.strip()]
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r.get("label")] = counts.get(r.get("label"), 0) + 1
    largest = max(counts.values())
    out = list(rows)
    for label, n in counts.items():
        out += [r for r in rows if r.get("label") == label] * (round(largest / n) - 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r) + "\n" for r in out))
    return dst


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    state = Path(args.state_dir)
    house_dir = Path(args.house_token) if args.house_token else None
    pref_dir = Path(args.preference_token) if args.preference_token else None
    if args.train in ("sft", "both"):
        house_dir = house_dir or state / "bench" / "house_style"
        started, cpu = time.time(), time.process_time()
        train_file("sft", HOUSE_STYLE_TRAIN, house_dir, eval_data=HOUSE_STYLE_EVAL, state_dir=state,
                   config=TrainConfig(n_tokens=1, epochs=args.sft_epochs, lr=args.sft_lr, seed=0,
                                      batch_size=args.batch_size, eval_every=args.eval_every))
        out["sft_seconds"] = time.time() - started
        out["sft_cpu_seconds"] = time.process_time() - cpu  # wall time on a shared machine is noisy
    if args.train in ("dpo", "both"):
        pref_dir = pref_dir or state / "bench" / "preference"
        started, cpu = time.time(), time.process_time()
        data = args.dpo_data or PREFERENCE_TRAIN
        if args.dpo_balance:
            data = balance_labels(data, state / "bench" / "preference_balanced.jsonl")
        train_file("dpo", data, pref_dir, eval_data=PREFERENCE_EVAL, state_dir=state,
                   config=TrainConfig(n_tokens=args.dpo_tokens, epochs=args.dpo_epochs, lr=args.dpo_lr,
                                      beta=args.beta, sft_weight=args.dpo_sft_weight, seed=0,
                                      batch_size=args.batch_size,
                                      eval_every=args.eval_every))
        out["dpo_seconds"] = time.time() - started
        out["dpo_cpu_seconds"] = time.process_time() - cpu
    if house_dir is None and pref_dir is None:
        return out
    model, tokenizer, digests = load_base_model("smollm2-135m-instruct", state_dir=state)
    adapter = attach(model, base_digest=digests.weights)
    if house_dir is not None:
        token = AlignerToken.load(house_dir)
        token.check_base(digests)
        out["house_style"] = evaluate_house_style(model, tokenizer, token, HOUSE_STYLE_EVAL)
        out["house_style"]["sft_seconds_manifest"] = token.manifest.metrics.get("seconds")
    if pref_dir is not None:
        token = AlignerToken.load(pref_dir)
        token.check_base(digests)
        out["preference"] = evaluate_refusals(model, tokenizer, token, PREFERENCE_EVAL)
        out["preference"]["n_tokens"] = token.manifest.n_tokens
    del adapter
    return out


def print_trained(trained: dict[str, Any]) -> None:
    table = Table(title="Held-out results (SmolLM2-135M-Instruct, greedy)")
    table.add_column("measure")
    table.add_column("base", justify="right")
    table.add_column("token", justify="right")
    if "house_style" in trained:
        h = trained["house_style"]
        table.add_row(f"house-style format adherence (n={h['n']}, 1 token)",
                      f"{100 * h['base_adherence']:.0f}%", f"{100 * h['token_adherence']:.0f}%")
    if "preference" in trained:
        p = trained["preference"]
        table.add_row(f"refusal rate, unsafe prompts (n={p['n_unsafe']}, {p['n_tokens']} tokens)",
                      f"{100 * p['base_refusal_unsafe']:.0f}%", f"{100 * p['token_refusal_unsafe']:.0f}%")
        table.add_row(f"refusal rate, benign prompts (n={p['n_benign']})",
                      f"{100 * p['base_refusal_benign']:.0f}%", f"{100 * p['token_refusal_benign']:.0f}%")
    for key in ("sft_seconds", "sft_cpu_seconds", "dpo_seconds", "dpo_cpu_seconds"):
        if key in trained:
            table.add_row(key.replace("_", " "), "", f"{trained[key]:.0f} s")
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Aligner benchmark on SmolLM2 (CPU)")
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--reps", type=int, default=3, help="interleaved generation runs per variant")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-speed", action="store_true", help="skip overhead/swap/memory")
    parser.add_argument("--only-overhead", action="store_true", help="generation overhead only")
    parser.add_argument("--train", choices=("sft", "dpo", "both"), help="train tokens on the shipped sets first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=25, help="training steps between evaluations")
    parser.add_argument("--house-token", help="evaluate this house-style token dir")
    parser.add_argument("--preference-token", help="evaluate this preference token dir")
    parser.add_argument("--sft-epochs", type=int, default=4)
    parser.add_argument("--sft-lr", type=float, default=5e-2)
    parser.add_argument("--dpo-tokens", type=int, default=4)
    parser.add_argument("--dpo-epochs", type=int, default=2)
    parser.add_argument("--dpo-lr", type=float, default=1e-2)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--dpo-data", help="DPO training JSONL (default: the shipped preference set)")
    parser.add_argument("--dpo-balance", action=argparse.BooleanOptionalAction, default=True,
                        help="repeat each label's pairs so the labels weigh about the same (see balance_labels)")
    parser.add_argument("--dpo-sft-weight", type=float, default=0.6,
                        help="weight of the chosen answers' NLL added to the DPO loss (0: pure DPO)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if not args.skip_speed:
        model, tokenizer, digests = load_base_model("smollm2-135m-instruct", state_dir=args.state_dir)
        results["overhead"] = bench_overhead(model, tokenizer, digests, args.reps, args.new_tokens)
        table = Table(title=f"Generation, SmolLM2-135M fp32, {args.new_tokens} new tokens (median of {args.reps})")
        for col in ("batch", "variant", "tokens/CPU-s", "overhead (CPU)", "tokens/s (wall)", "overhead (wall)"):
            table.add_column(col, justify="right")
        for r in results["overhead"]:
            bare = r["variant"] == "bare"
            table.add_row(str(r["batch"]), r["variant"], f"{r['tokens_per_cpu_s']:.1f}",
                          "—" if bare else f"{r['overhead_pct']:+.1f}%", f"{r['tokens_per_s']:.1f}",
                          "—" if bare else f"{r['wall_overhead_pct']:+.1f}%")
        console.print(table)
    if not args.skip_speed and not args.only_overhead:
        results["swap"] = swap = bench_swap(model, digests)
        results["memory"] = mem = bench_memory(digests)
        table = Table(title="Swap and memory")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("swap p50 / p99 / max (1000 swaps)",
                      f"{swap['p50_ms'] * 1000:.1f} / {swap['p99_ms'] * 1000:.1f} / {swap['max_ms'] * 1000:.1f} µs")
        table.add_row("first forward after a swap (projections, CPU)", f"+{swap['first_forward_extra_ms']:.2f} ms")
        table.add_row("parameters per version (n=1)", f"{mem['params']}")
        table.add_row("tensor bytes / archive bytes per version", f"{mem['tensor_bytes']} / {mem['archive_bytes']}")
        table.add_row(f"RSS growth for {mem['versions']:,} resident versions",
                      f"{mem['rss_growth_mb']:.1f} MiB ({mem['rss_per_version_bytes']:.0f} B each)")
        console.print(table)
        del model

    trained = run_training(args)
    results.update(trained)
    if trained:
        print_trained(trained)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
