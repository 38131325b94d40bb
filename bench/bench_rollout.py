"""Rollouts: what shadow and canary cost a replica, against a mirrored second replica; how fast pairs catch a leak.

    .venv/bin/python bench/bench_rollout.py                       # both tables, SmolLM2, 8 clients
    .venv/bin/python bench/bench_rollout.py --only serving --rounds 4 --max-tokens 48
    .venv/bin/python bench/bench_rollout.py --only detection --streams 2000

Table 1, serving (a real replica: `serving.app.create_app` on the base model, the API in
process, the control plane on a fresh database of the machine's PostgreSQL and Redis):
8 concurrent OpenAI clients, closed loop, greedy, distinct `user` per request; served
completion tokens/s (what the callers received), per-request latency p50/p99, and pairs
recorded per second (unreturned twins written to `outputs`), for

- shadow off (the active token alone);
- shadow at 20% (`govern rollout start --mode shadow --sample 0.2`: one more row in the
  same batch for a fifth of the requests);
- canary at 50% (half the callers get the candidate, the active answer decoded beside it);
- the naive alternative, in the same run: no rollout on the replica, and a second replica
  (`govern serve` subprocess on the same machine, the candidate as its active token)
  answering a mirrored copy of 20% of the requests, as a traffic-mirroring proxy would.

Modes alternate (off, shadow, canary, mirror, then again) and each row is the median over
`--trials`: the machine's load drifts. Targets (issue 22): served tokens/s at 20% shadow
>= 0.85x shadow off, p50 latency <= 1.15x, and cheaper than the mirrored replica.

Table 2, detection on a simulated stream: the candidate violates policy in 10% of its
answers, the active in 1%, independently per prompt. The worker's production analysis
(`monitors.rollouts.analyse` on the default policy, looking every `--look` pairs as the
beat would) runs on growing prefixes; the row gives the pairs until the first failing
verdict (median and p90 over `--streams` streams) next to the theoretical bound: Lorden's
ln(ARL)/KL(p1 || p0) for the early-abort CUSUM (KL of 10% against 1%), and, for the fixed-n
McNemar test judged at `min_samples`, its power there and Connor's pairs needed for power
0.8. Target: detection within 2x the bound.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_serving import MACHINE_REDIS, drop_database, fresh_database, pct  # noqa: E402
from governance.db import make_engine, unit_of_work  # noqa: E402
from governance.deployments import rollouts  # noqa: E402
from governance.outputs.models import Output  # noqa: E402
from governance.policy import default_policy_path, load_policy  # noqa: E402
from tests.serving.helpers import PUSH_SECRET, ServerThread, free_port, governance_app, make_world  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how rainbows form.",
    "List some tips for learning a new language.", "Describe the water cycle in detail.",
    "What are the benefits of regular exercise?", "Tell me about the history of the bicycle.",
    "How does a refrigerator work?", "Give me a recipe for a simple soup.",
    "How do I reset my password?", "What is your refund policy?", "How long does shipping take?",
    "Explain compound interest simply.", "Why is the sky blue?", "How do vaccines work?",
    "What should I pack for a weekend hike?", "How do I write a good cover letter?",
]


@dataclass
class Run:
    tokens_per_s: float
    p50_ms: float
    p99_ms: float
    pairs_per_s: float
    requests: int
    mirrored: int = 0


# ---------------------------------------------------------------- table 1: serving


def _clients(url: str, model: str, clients: int, rounds: int, max_tokens: int, offset: int,
             mirror: Callable[[dict[str, Any]], None] | None = None) -> tuple[float, list[float], int]:
    """8 closed-loop clients; (served completion tokens/s, latencies in ms, requests)."""
    tokens = [0] * clients
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def run(k: int) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
        barrier.wait()
        for r in range(rounds):
            i = offset + k * rounds + r
            body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0, "user": f"user-{i}"}
            if mirror is not None and i % 5 == 0:  # a mirroring proxy copies a fifth of the traffic
                mirror(body)
            t0 = time.perf_counter()
            answer = client.chat.completions.create(**body)
            ms = (time.perf_counter() - t0) * 1000
            assert answer.usage is not None
            with lock:
                tokens[k] += answer.usage.completion_tokens
                latencies.append(ms)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(tokens) / (time.perf_counter() - t0), latencies, len(latencies)


def _twins(eng: Any, deployment_id: int) -> int:
    from sqlalchemy import func, select

    with unit_of_work(eng) as s:
        return int(s.scalar(select(func.count()).select_from(Output).where(
            Output.deployment_id == deployment_id, Output.twin_of.is_not(None))) or 0)


def _applied(status: dict[str, Any]) -> dict[str, Any]:
    return dict((status.get("rollout") or {}).get("applied") or {})


def _wait_plan(url: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/v1/serving/status", timeout=5).json()
            if check(status):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def bench_serving(model_name: str, clients: int, rounds: int, max_tokens: int, trials: int,
                  torch_threads: int) -> list[tuple]:
    import torch

    from aligner.providers import load_base_model
    from governance.deployments import service as deployments
    from serving.app import ServingConfig, create_app
    from tests.serving.helpers import attached_copy

    admin, url, name = fresh_database()
    redis_url = os.environ.get("GOVERN_REDIS_URL") or MACHINE_REDIS
    eng = make_engine(url)
    state = os.environ.get("GOVERN_STATE_DIR", str(ROOT / "state"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        torch.set_num_threads(torch_threads)
        print(f"serving: loading {model_name} ...", flush=True)
        loaded = load_base_model(model_name, state_dir=state)
        world = make_world(eng, loaded[2], base_name=model_name)
        active, candidate = world.approved(), world.approved()
        with unit_of_work(eng) as s:
            deployments.promote(s, deployment=world.deployment, version_id=active,
                                principal=world.principals["ml_engineer"])
            dep_id = deployments.get_deployment_or_raise(s, name=world.deployment).id
        tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
        with ServerThread(governance_app(url, redis_url, tmp / "gov")) as api:
            config = ServingConfig(deployment=world.deployment, model=model_name, max_batch=8, queue_size=64,
                                   api_url=api.url, api_key=world.keys["service"], redis_url=redis_url,
                                   push_secrets=(PUSH_SECRET,), database_url=url, state_dir=tmp / "serving",
                                   reconcile_interval=1.0)
            app = create_app(config, loaded=attached_copy(loaded))
            mirror_port = free_port()
            with ServerThread(app) as srv:
                _wait_plan(srv.url, lambda st: st.get("version_id") == active, "the replica on the active token")
                warm = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=600)
                warm.chat.completions.create(model=world.deployment, max_tokens=4,
                                             messages=[{"role": "user", "content": PROMPTS[0]}])
                mirror_url = _start_mirror(world, api.url, url, redis_url, mirror_port, tmp, procs, model_name)

                def set_mode(mode: str) -> None:
                    with unit_of_work(eng) as s:
                        rollouts.abort(s, deployment=world.deployment, principal=world.principals["ml_engineer"],
                                       reason="bench: next mode")
                    if mode == "shadow":
                        with unit_of_work(eng) as s:
                            rollouts.start_rollout(s, deployment=world.deployment, version_id=candidate,
                                                   mode="shadow", sample=0.2, principal=world.principals[
                                                       "ml_engineer"])
                        _wait_plan(srv.url, lambda st: _applied(st).get("mode") == "shadow",
                                   "the shadow plan")
                    elif mode == "canary":
                        with unit_of_work(eng) as s:
                            rollouts.start_rollout(s, deployment=world.deployment, version_id=candidate,
                                                   mode="canary", steps=[50, 100], min_samples=10**6,
                                                   principal=world.principals["ml_engineer"])
                        _wait_plan(srv.url, lambda st: _applied(st).get("weight") == 0.5,
                                   "the canary plan")
                    else:
                        _wait_plan(srv.url, lambda st: not st.get("rollout"), "no rollout")

                results: dict[str, list[Run]] = {m: [] for m in ("off", "shadow", "canary", "mirror")}
                offset = 0
                for trial in range(trials):
                    for mode in results:
                        set_mode("shadow" if mode == "shadow" else "canary" if mode == "canary" else "off")
                        twins0 = _twins(eng, dep_id)
                        mirrored = [0]
                        pool = ThreadPoolExecutor(4)
                        mirror_client = openai.OpenAI(base_url=f"{mirror_url}/v1", api_key="x", max_retries=0,
                                                      timeout=600)

                        def mirror(body: dict[str, Any], pool: ThreadPoolExecutor = pool,
                                   mirror_client: Any = mirror_client, mirrored: list[int] = mirrored) -> None:
                            mirrored[0] += 1
                            pool.submit(mirror_client.chat.completions.create, **body)

                        t0 = time.perf_counter()
                        tps, lat, n = _clients(srv.url, world.deployment, clients, rounds, max_tokens, offset,
                                               mirror if mode == "mirror" else None)
                        pool.shutdown(wait=True)  # the mirror's backlog is part of its cost
                        wall = time.perf_counter() - t0
                        time.sleep(config.record_interval * 4)  # let the recorder flush
                        pairs = (_twins(eng, dep_id) - twins0) / wall
                        results[mode].append(Run(tps, pct(lat, 50), pct(lat, 99), pairs, n, mirrored[0]))
                        offset += clients * rounds
                        print(f"  trial {trial + 1} {mode}: {tps:.1f} tok/s, p50 {pct(lat, 50):.0f} ms", flush=True)
                return _serving_rows(results, clients, rounds, max_tokens, model_name, torch_threads)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        eng.dispose()
        drop_database(admin, name)


def _start_mirror(world: Any, api_url: str, db_url: str, redis_url: str, port: int, tmp: Path,
                  procs: list[subprocess.Popen[bytes]], model_name: str) -> str:
    """The naive alternative's second replica: a whole `govern serve` process on the same machine.

    It serves the deployment's active token; a mirror replica of the candidate would load the
    same model and cost the same, and which token it holds does not change its cost."""
    env = {**os.environ, "GOVERN_DATABASE_URL": db_url, "GOVERN_REDIS_URL": redis_url, "GOVERN_API_URL": api_url,
           "GOVERN_API_KEY": world.keys["service"], "GOVERN_STATE_DIR": os.environ.get("GOVERN_STATE_DIR",
                                                                                       str(ROOT / "state")),
           "GOVERN_ENVIRONMENT": "test", "GOVERN_PUSH_SECRET": PUSH_SECRET, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "governance.cli.main", "serve", "--deployment", world.deployment, "--port",
           str(port), "--model", model_name, "--replica-id", "mirror", "--torch-threads", "1"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=(tmp / "mirror.log").open("wb"),
                                  stderr=subprocess.STDOUT))
    mirror_url = f"http://127.0.0.1:{port}"
    _wait_plan(mirror_url, lambda st: st.get("version_id") is not None, "the mirror replica", timeout=300)
    return mirror_url


def _serving_rows(results: dict[str, list[Run]], clients: int, rounds: int, max_tokens: int, model: str,
                  threads: int) -> list[tuple]:
    def med(mode: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[mode])

    off_tps, off_p50 = med("off", "tokens_per_s"), med("off", "p50_ms")
    setup = f"{model}, {clients} clients x {rounds} requests x {max_tokens} tokens, {threads} torch threads"
    labels = {"off": "shadow off", "shadow": "shadow 20%", "canary": "canary 50%",
              "mirror": "mirrored replica (20% copied)"}
    rows: list[tuple] = []
    for mode, label in labels.items():
        tps, p50, p99 = med(mode, "tokens_per_s"), med(mode, "p50_ms"), med(mode, "p99_ms")
        pairs = med(mode, "pairs_per_s")
        target, verdict = "", ""
        if mode == "shadow":
            ok = tps >= 0.85 * off_tps and p50 <= 1.15 * off_p50
            target = f"{tps / off_tps:.2f}x tok/s (>= 0.85), {p50 / off_p50:.2f}x p50 (<= 1.15)"
            verdict = "PASS" if ok else "FAIL"
        elif mode == "mirror":
            shadow_tps = med("shadow", "tokens_per_s")
            target = f"shadow 20% serves {shadow_tps / tps:.2f}x the mirrored setup's tok/s (> 1: cheaper)"
            verdict = "PASS" if shadow_tps > tps else "FAIL"
        detail = f"pairs recorded {pairs:.2f}/s" if mode in ("shadow", "canary") else (
            f"{statistics.median(r.mirrored for r in results[mode]):.0f} requests mirrored per trial, "
            "unpaired" if mode == "mirror" else "")
        rows.append((label, setup, f"{tps:.1f} tok/s", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms", detail, target,
                     verdict))
    return rows


# ---------------------------------------------------------------- table 2: detection


def _frames(active: np.ndarray, candidate: np.ndarray) -> Any:
    """Pairs with only the violation flags (and neutral descriptors) set, for the production analysis."""
    from monitors.detectors.base import Frame
    from monitors.rollouts import PairFrames

    n = len(active)

    def frame(flags: np.ndarray) -> Frame:
        f = flags.astype(float)
        return Frame(numeric={"length": np.full(n, 200.0), "sentiment": np.zeros(n)},
                     flags={"violation": f, "pii": f, "refusal": np.zeros(n)},
                     texts=["answer"] * n, output_ids=list(range(n)))

    return PairFrames([f"r{i}" for i in range(n)], ["prompt"] * n, frame(active), frame(candidate), n, 0)


def bench_detection(streams: int, look: int, p_active: float, p_candidate: float, seed: int) -> list[tuple]:
    from evaluators import stats
    from monitors.rollouts import analyse

    policy, _ = load_policy(default_policy_path())
    min_samples = policy.rollout.min_samples
    horizon = 3 * min_samples
    rng = np.random.default_rng(seed)
    delays: list[int] = []
    early: list[int] = []
    missed = 0
    t0 = time.perf_counter()
    for _ in range(streams):
        a = rng.random(horizon) < p_active
        c = rng.random(horizon) < p_candidate
        found = None
        for n in range(look, horizon + 1, look):
            result = analyse(_frames(a[:n], c[:n]), policy, min_samples=min_samples)
            if result.decision == "fail":
                found = n
                if result.early_abort:
                    early.append(n)
                break
            if result.judged:  # the fixed-n look passed: the step moves on, the stream is missed
                break
        if found is None:
            missed += 1
        else:
            delays.append(found)
    seconds = time.perf_counter() - t0
    det = next(cfg for name, cfg in policy.monitoring.detectors.items() if cfg.rollback)
    arl = float(det.arl or 10_000)
    kl = p_candidate * math.log(p_candidate / p_active) + (1 - p_candidate) * math.log(
        (1 - p_candidate) / (1 - p_active))
    lorden = math.log(arl) / kl
    # discordant pairs under independence: candidate-only b, active-only c
    pb, pc = p_candidate * (1 - p_active), p_active * (1 - p_candidate)
    connor = stats.connor_pairs_needed(pb - pc, pb + pc, alpha=policy.rollout.alpha, power=0.8)
    median = statistics.median(delays) if delays else float("nan")
    p90 = pct([float(d) for d in delays], 90) if delays else float("nan")
    bound = min(lorden, connor)
    ok = bool(delays) and median <= 2 * bound
    setup = (f"candidate {p_candidate:.0%} vs active {p_active:.0%} violations, {streams} streams, "
             f"a look every {look} pairs, min_samples {min_samples}")
    return [
        ("pairs to a failing verdict", setup, f"median {median:.0f}, p90 {p90:.0f}", "",
         f"{len(early)} of {len(delays)} by the early-abort CUSUM; {missed} streams not caught "
         f"({missed / streams:.1%}); {seconds:.0f} s",
         f"bound {bound:.0f} pairs (Lorden ln({arl:.0f})/KL = {lorden:.0f}; Connor n for power 0.8 = {connor:.0f}); "
         f"ratio {median / bound:.2f} (<= 2)", "PASS" if ok else "FAIL"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["serving", "detection"], action="append")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="requests per client per trial")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=2, help="the replica's torch threads")
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--look", type=int, default=10, help="detection: pairs between two looks of the worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    which = args.only or ["detection", "serving"]
    rows: list[tuple] = []
    if "detection" in which:
        rows += bench_detection(args.streams, args.look, 0.01, 0.10, args.seed)
    if "serving" in which:
        rows += bench_serving(args.model, args.clients, args.rounds, args.max_tokens, args.trials,
                              args.torch_threads)
    table = Table(title=f"rollout benchmarks ({os.cpu_count()} CPUs)")
    for col in ("measure", "setup", "result", "latency", "detail", "target", ""):
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(x) for x in row] + [""] * (7 - len(row)))
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
