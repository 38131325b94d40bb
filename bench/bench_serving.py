"""Serving benchmarks: token propagation to replicas, output ingest rate, serving overhead. Prints a table.

    .venv/bin/python bench/bench_serving.py                 # all three
    .venv/bin/python bench/bench_serving.py --only propagation --flips 100
    .venv/bin/python bench/bench_serving.py --only overhead --max-tokens 64

- propagation: 3 replicas (`govern serve` subprocesses, tiny random Llama, `--torch-threads`
  1 by default, no fence, so only the Redis push path counts) and 100 flips (alternating
  promotions and rollbacks, committed through the deployments service exactly as the API
  does, then published as the API does right after its commit: `publish_committed`, the
  payload from memory, the outbox row marked afterwards). Per flip:
  from the moment the commit returned to the moment the last replica swapped the token in
  (each replica's own clock, same machine; the bench polls slowly so it does not steal
  their CPU). Target p99 < 50 ms. The breakdown rows split the slowest replica's time
  into commit -> message received, received -> verified token proposed (cache or fetch),
  proposed -> applied by the model thread. Flips start once every replica has prefetched
  the versions (steady state). `--load N` keeps N clients per replica sending completions
  (`--load-max-tokens`, from a separate process) during the flips: a swap then waits for
  the decode step in flight and competes with decoding for the CPU.
- ingest: outputs/s through the recorder's batch path (`OutputRecorder` + the database
  sink = `governance.outputs.service.ingest_outputs`, one transaction per batch of 1,000).
  Target >= 5,000/s.
- overhead: completion tokens/s through the server (OpenAI client over HTTP, dynamic
  batching, recording on, fence on) vs calling the model directly (transformers'
  `generate` on the same batch), at 1 and 8 concurrent clients, greedy. Target >= 90%.
  Direct and served runs alternate (`--trials` served runs, each between two direct
  runs) because the machine's load drifts; the result is the median ratio. The detail
  also gives the ratio per CPU second of the bench process (server, API and clients
  included), which other jobs on the machine do not move.

Uses GOVERN_DATABASE_URL / GOVERN_REDIS_URL when set, else the machine's services at
127.0.0.1, creating (and dropping) a fresh database of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The project's modules after the path is set (the bench runs as a script from any folder).
import torch  # noqa: E402

from aligner.generation import encode_chat, generate_ids  # noqa: E402
from aligner.providers import load_base_model  # noqa: E402
from governance import migrate  # noqa: E402
from governance.db import make_engine, unit_of_work  # noqa: E402
from governance.deployments import service as deployments  # noqa: E402
from governance.outbox.service import Outgoing, mark_published, publish_pending, send_committed, take_outgoing  # noqa: E402
from serving.app import ServingConfig, create_app  # noqa: E402
from serving.recorder import DatabaseSink, OutputRecorder  # noqa: E402
from tests.serving.helpers import (  # noqa: E402
    PUSH_SECRET,
    ServerThread,
    attached_copy,
    free_port,
    governance_app,
    make_world,
)

MACHINE_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rainbows form.",
    "List some tips for learning a new language.",
    "Describe the water cycle in detail.",
    "What are the benefits of regular exercise?",
    "Tell me about the history of the bicycle.",
    "How does a refrigerator work?",
    "Give me a recipe for a simple soup.",
]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def fresh_database() -> tuple[str, str, str]:
    admin = os.environ.get("GOVERN_DATABASE_URL") or MACHINE_PG
    name = f"govern_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    eng = make_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    return admin, url, name


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


# ---------------------------------------------------------------- propagation


def load_worker(urls: list[str], clients: int, max_tokens: int, model: str) -> None:
    """Run in a separate process: `clients` threads per replica, each sending completions until killed."""

    def run(url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while True:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                try:
                    r = c.post("/v1/chat/completions", json=body)
                    if r.status_code >= 500:
                        print(f"load: {url} answered {r.status_code}: {r.text[:200]}", flush=True)
                except httpx.HTTPError:
                    time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(u, k), daemon=True) for u in urls for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _replica_env(world: Any, api_url: str, url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "GOVERN_DATABASE_URL": url,
        "GOVERN_REDIS_URL": redis_url,
        "GOVERN_API_URL": api_url,
        "GOVERN_API_KEY": world.keys["service"],
        "GOVERN_STATE_DIR": str(Path(os.environ.get("GOVERN_STATE_DIR", ROOT / "state"))),
        "GOVERN_ENVIRONMENT": "test",
        "GOVERN_PUSH_SECRET": PUSH_SECRET,  # what governance_app signs with
        "PYTHONPATH": str(ROOT),
    }


def _start_replica(port: int, deployment: str, env: dict[str, str], logdir: Path, torch_threads: int) -> Any:
    cmd = [sys.executable, "-m", "governance.cli.main", "serve", "--deployment", deployment, "--port", str(port)]
    cmd += ["--model", "tiny-random-llama", "--no-fence", "--replica-id", f"bench{port}"]
    cmd += ["--torch-threads", str(torch_threads)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=(logdir / f"{port}.log").open("wb"), stderr=subprocess.STDOUT
    )


def _status(c: httpx.Client) -> dict[str, Any]:
    try:
        return dict(c.get("/v1/serving/status").json())
    except (httpx.HTTPError, ValueError):
        return {}


def _wait_steady(clients: list[httpx.Client], n_versions: int, logdir: Path) -> None:
    """Every replica ready and subscribed, then (best effort) every version prefetched and verified."""
    deadline = time.monotonic() + 300
    while not all(_status(c).get("ready") and _status(c).get("pubsub_connected") for c in clients):
        if time.monotonic() > deadline:
            raise SystemExit(f"replicas did not become ready; logs in {logdir}")
        time.sleep(0.2)
    # Steady state: each replica has prefetched and verified the versions (a replica that
    # has just started fetches the ones it has not reached yet on the push path).
    deadline = time.monotonic() + 60
    while not all(_status(c).get("cached_tokens", 0) >= n_versions for c in clients):
        if time.monotonic() > deadline:
            print("propagation: prefetch not complete after 60 s; measuring anyway", flush=True)
            break
        time.sleep(0.2)


def _flip(eng: Any, world: Any, versions: list[int], i: int, nxt: int) -> tuple[int, Outgoing]:
    """One promotion or rollback, committed exactly as the API does it; returns what to publish."""
    dep = world.deployment
    with unit_of_work(eng) as s:
        if i % 2 == 0:
            promo = deployments.promote(
                s, deployment=dep, version_id=versions[nxt], principal=world.principals["ml_engineer"]
            )
            gen = int(promo.generation)
        else:
            out = deployments.rollback(
                s, deployment=dep, principal=world.principals["compliance_officer"], reason="bench flip"
            )
            assert out.status == "rolled_back", out
            gen = int(out.generation or 0)
    return gen, take_outgoing(s)


@dataclass
class _Flips:
    """Per flip, in ms: latencies to the slowest replica, and the slowest replica's breakdown."""

    commit: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    published: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)  # commit -> the slowest replica received the message
    prep: list[float] = field(default_factory=list)  # received -> verified token proposed
    apply: list[float] = field(default_factory=list)  # proposed -> applied by the model thread
    cached: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: {"promote": 0, "rollback": 0})


def _wait_swapped(clients: list[httpx.Client], gen: int, i: int) -> tuple[list[float], list[dict[str, Any]]]:
    """When each replica swapped generation `gen` in (its own clock), and its last sync timing."""
    swapped: list[float] = []
    syncs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    time.sleep(0.01)
    for c in clients:
        while True:
            s = _status(c)
            if s.get("generation") == gen and s.get("swapped_at"):
                swapped.append(float(s["swapped_at"]))
                sync = s.get("last_sync") or {}
                syncs.append(sync if sync.get("generation") == gen else {})
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"flip {i}: a replica did not reach generation {gen}")
            time.sleep(0.02)  # polling slowly: the replica's own clock says when it swapped
    return swapped, syncs


def _measure_flips(
    eng: Any, world: Any, versions: list[int], clients: list[httpx.Client], redis_url: str, flips: int
) -> _Flips:
    m = _Flips()
    _flip(eng, world, versions, 0, 0)
    publish_pending(eng, redis_url, push_secret=PUSH_SECRET)  # the sweep: sends whatever was left unsent
    nxt = 1
    for i in range(flips):
        time.sleep(0.05)  # let the previous flip settle everywhere
        t_sent = time.time()
        gen, outgoing = _flip(eng, world, versions, i, nxt)
        t_commit = time.time()  # the commit has just returned
        # What the API runs right after each commit (`publish_committed`), in its two halves
        # so that "published" is the moment the PUBLISH returned, not the row's marking.
        sent = send_committed(redis_url, outgoing, push_secret=PUSH_SECRET)
        t_published = time.time()
        mark_published(eng, sent)
        if i % 2 == 0:
            nxt += 1
            m.kinds["promote"] += 1
        else:
            m.kinds["rollback"] += 1
        swapped, syncs = _wait_swapped(clients, gen, i)
        last = max(swapped)
        slowest = syncs[swapped.index(last)]
        if slowest:
            m.hop.append((slowest["received_at"] - t_commit) * 1000)
            m.prep.append((slowest["ready_at"] - slowest["received_at"]) * 1000)
            m.apply.append((last - slowest["ready_at"]) * 1000)
        m.cached += sum(1 for x in syncs if x.get("cached"))
        m.commit.append((last - t_commit) * 1000)
        m.sent.append((last - t_sent) * 1000)
        m.published.append((last - t_published) * 1000)
    return m


def _stop_all(procs: list[Any]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_propagation(
    eng: Any,
    url: str,
    redis_url: str,
    tiny: Any,
    flips: int,
    n_replicas: int,
    *,
    torch_threads: int = 1,
    load: int = 0,
    load_max_tokens: int = 16,
) -> list[tuple]:
    world = make_world(eng, tiny[2])
    n_versions = flips // 2 + 2
    print(f"propagation: approving {n_versions} versions ...", flush=True)
    versions = [world.approved() for _ in range(n_versions)]
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(n_replicas)]
    logdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    with ServerThread(governance_app(url, redis_url, logdir / "gov")) as api:
        env = _replica_env(world, api.url, url, redis_url)
        try:
            for p in ports:
                procs.append(_start_replica(p, world.deployment, env, logdir, torch_threads))
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=5) for p in ports]
            _wait_steady(clients, n_versions, logdir)
            if load:
                urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
                cmd = [sys.executable, __file__, "--load-worker", urls, "--load", str(load)]
                cmd += ["--load-max-tokens", str(load_max_tokens), "--load-model", world.deployment]
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env))
                time.sleep(2.0)  # the clients are sending before the first flip
            m = _measure_flips(eng, world, versions, clients, redis_url, flips)
        finally:
            _stop_all(procs)
    label = f"{flips} flips ({m.kinds['promote']} promote, {m.kinds['rollback']} rollback), {n_replicas} replicas"
    label += f", torch threads {torch_threads}" + (
        f", load {load} client(s)/replica x {load_max_tokens} tokens" if load else ", idle"
    )
    return _propagation_rows(m, label, flips * n_replicas)


def _propagation_rows(m: _Flips, label: str, syncs: int) -> list[tuple]:
    parts = [
        ("slowest replica: commit -> message received", m.hop, "(Redis hop, incl. publishing)"),
        ("slowest replica: received -> token proposed", m.prep, f"cache hits {m.cached}/{syncs}"),
        ("slowest replica: proposed -> applied", m.apply, "(model thread; waits for a batch in flight)"),
    ]
    breakdown = [
        (name, label, f"p50 {pct(v, 50):.1f} ms", f"p99 {pct(v, 99):.1f} ms", note, "") for name, v, note in parts if v
    ]
    return [
        (
            "propagation: commit -> all replicas serve it",
            label,
            f"p50 {pct(m.commit, 50):.1f} ms",
            f"p99 {pct(m.commit, 99):.1f} ms",
            "p99 < 50 ms",
            "PASS" if pct(m.commit, 99) < 50 else "FAIL",
        ),
        (
            "propagation: published -> all serve it",
            label,
            f"p50 {pct(m.published, 50):.1f} ms",
            f"p99 {pct(m.published, 99):.1f} ms",
            "(replica side only)",
            "",
        ),
        (
            "propagation: transaction start -> all serve it",
            label,
            f"p50 {pct(m.sent, 50):.1f} ms",
            f"p99 {pct(m.sent, 99):.1f} ms",
            "(includes the commit)",
            "",
        ),
        *breakdown,
    ]


# ---------------------------------------------------------------- ingest


def bench_ingest(eng: Any, url: str, tiny: Any, rows: int) -> list[tuple]:
    world = make_world(eng, tiny[2])
    spool = Path(tempfile.mkdtemp(prefix="bench-ingest-")) / "spool.jsonl"
    rec = OutputRecorder(
        DatabaseSink(url, world.deployment), spool_path=spool, batch_size=1000, flush_interval=0.05, max_queue=rows + 1
    )
    now = datetime.now(UTC).isoformat()
    msgs = [{"role": "user", "content": "How do I reset my password? Please explain step by step."}]
    data = [
        {
            "request_id": f"bench-{i}",
            "version_id": None,
            "generation": 0,
            "messages": msgs,
            "output": "Open the settings page, choose 'reset password' and follow the link we e-mail you. " * 2,
            "prompt_tokens": 20,
            "completion_tokens": 40,
            "latency_ms": 120.0,
            "created_at": now,
        }
        for i in range(rows)
    ]
    rec.start()
    t0 = time.perf_counter()
    for row in data:
        rec.record(row)
    rec.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    rec.stop()
    rate = rec.stats.written / elapsed
    assert rec.stats.spooled == 0, "the database failed during the ingest bench"
    return [
        (
            "ingest: outputs/s through the batch path",
            f"{rows} outputs, batches of 1000",
            f"{rate:,.0f}/s",
            f"{elapsed:.2f} s",
            ">= 5,000/s",
            "PASS" if rate >= 5000 else "FAIL",
        )
    ]


# ---------------------------------------------------------------- overhead


def _direct(model: Any, tokenizer: Any, batch: list[str], max_tokens: int, rounds: int) -> tuple[float, float]:
    """(tokens/s of wall time, tokens per CPU second of this process) of transformers' generate."""
    enc = encode_chat(tokenizer, batch)
    eos_config = model.generation_config.eos_token_id
    eos = {tokenizer.eos_token_id, *([eos_config] if isinstance(eos_config, int) else eos_config or [])}
    produced, elapsed, cpu = 0, 0.0, 0.0
    for _ in range(rounds):
        out: list[Any] = []

        def call(out: list[Any] = out) -> None:
            with torch.inference_mode():  # the fastest direct call: no autograd bookkeeping at all
                out.append(
                    generate_ids(
                        model,
                        enc["input_ids"],
                        enc["attention_mask"],
                        max_new_tokens=max_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                )

        # On a worker thread, like the server's model thread: measured here, torch's OpenMP team
        # on the main thread of an oversubscribed machine runs generate up to 6x slower.
        t0, c0 = time.perf_counter(), time.process_time()
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for row in out[0].tolist():
            produced += next((i for i, t in enumerate(row) if t in eos), len(row))
    return produced / elapsed, produced / cpu


def _served(srv_url: str, model: str, clients: int, max_tokens: int, rounds: int) -> tuple[float, float]:
    """(tokens/s, tokens per CPU second of this process: server, API and clients) through HTTP."""
    tokens = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def run(k: int) -> None:
        client = openai.OpenAI(base_url=f"{srv_url}/v1", api_key="x", max_retries=0, timeout=600)
        barrier.wait()
        for _ in range(rounds):
            r = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                max_tokens=max_tokens,
                temperature=0,
            )
            assert r.usage is not None
            tokens[k] += r.usage.completion_tokens

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    return sum(tokens) / (time.perf_counter() - t0), sum(tokens) / (time.process_time() - c0)


def _overhead_row(
    clients: int,
    model_name: str,
    direct: Callable[[list[str]], tuple[float, float]],
    served: Callable[[int], tuple[float, float]],
    *,
    trials: int,
    rounds: int,
    max_tokens: int,
) -> tuple:
    # The machine is shared and its load drifts: direct and served runs alternate
    # (direct, served, direct, ..., direct) and each served run is compared with the
    # mean of the direct runs on either side; the table gives the median of those ratios.
    batch = PROMPTS[:clients]
    d = [direct(batch)]
    srv_runs: list[tuple[float, float]] = []
    for _ in range(trials):
        srv_runs.append(served(clients))
        d.append(direct(batch))
    wall = [srv_runs[i][0] / ((d[i][0] + d[i + 1][0]) / 2) for i in range(trials)]
    cpu = [srv_runs[i][1] / ((d[i][1] + d[i + 1][1]) / 2) for i in range(trials)]
    ratio = statistics.median(wall)
    return (
        f"overhead: {clients} client(s), {model_name}",
        f"{trials} trials x {rounds} rounds x {max_tokens} tokens",
        f"server {statistics.median(r[0] for r in srv_runs):.1f} tok/s",
        f"direct {statistics.median(x[0] for x in d):.1f} tok/s; ratios "
        + "/".join(f"{x:.0%}" for x in wall)
        + f"; per CPU second {statistics.median(cpu):.0%}",
        f"{ratio:.0%} (>= 90%)",
        "PASS" if ratio >= 0.9 else "FAIL",
    )


def bench_overhead(
    eng: Any, url: str, redis_url: str, model_name: str, max_tokens: int, rounds: int, trials: int = 3
) -> list[tuple]:
    state = os.environ.get("GOVERN_STATE_DIR", str(ROOT / "state"))
    print(f"overhead: loading {model_name} ...", flush=True)
    loaded = load_base_model(model_name, state_dir=state)
    world = make_world(eng, loaded[2], base_name=model_name)  # beside the tiny model of propagation/ingest
    model, tokenizer, _ = loaded

    def direct(batch: list[str], max_tokens: int = max_tokens, rounds: int = rounds) -> tuple[float, float]:
        return _direct(model, tokenizer, batch, max_tokens, rounds)

    torch.set_num_threads(torch.get_num_threads())
    direct(PROMPTS[:8], max_tokens=4, rounds=1)  # warm-up: the first forward passes of a process pay for allocations
    with ServerThread(governance_app(url, redis_url, Path(tempfile.mkdtemp()) / "gov")) as api:
        config = ServingConfig(
            deployment=world.deployment,
            model=model_name,
            max_batch=8,
            queue_size=64,
            api_url=api.url,
            api_key=world.keys["service"],
            redis_url=redis_url,
            push_secrets=(PUSH_SECRET,),
            database_url=url,
            state_dir=Path(tempfile.mkdtemp(prefix="bench-serving-")),
        )
        app = create_app(config, loaded=attached_copy(loaded))
        with ServerThread(app) as srv:
            while httpx.get(f"{srv.url}/readyz").status_code != 200:
                time.sleep(0.1)
            warm = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=600)
            warm.chat.completions.create(
                model=world.deployment, messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=4
            )  # the same warm-up as the direct path

            def served(clients: int) -> tuple[float, float]:
                return _served(srv.url, world.deployment, clients, max_tokens, rounds)

            return [
                _overhead_row(clients, model_name, direct, served, trials=trials, rounds=rounds, max_tokens=max_tokens)
                for clients in (1, 8)
            ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["propagation", "ingest", "overhead"], action="append")
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--ingest-rows", type=int, default=50_000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3, help="overhead: served runs, each between two direct runs")
    parser.add_argument("--torch-threads", type=int, default=1, help="propagation: torch threads per replica")
    parser.add_argument("--load", type=int, default=0, help="propagation: clients per replica sending requests")
    parser.add_argument("--load-max-tokens", type=int, default=16, help="propagation: max_tokens of the load")
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)  # internal: the load process's replica URLs
    parser.add_argument("--load-model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        load_worker(args.load_worker.split(","), args.load, args.load_max_tokens, args.load_model)
        return
    which = args.only or ["propagation", "ingest", "overhead"]
    admin, url, name = fresh_database()
    redis_url = os.environ.get("GOVERN_REDIS_URL") or MACHINE_REDIS
    eng = make_engine(url)
    rows: list[tuple] = []
    try:
        tiny = load_base_model("tiny-random-llama", state_dir=os.environ.get("GOVERN_STATE_DIR", str(ROOT / "state")))
        if "propagation" in which:
            rows += bench_propagation(
                eng,
                url,
                redis_url,
                tiny,
                args.flips,
                args.replicas,
                torch_threads=args.torch_threads,
                load=args.load,
                load_max_tokens=args.load_max_tokens,
            )
        if "ingest" in which:
            rows += bench_ingest(eng, url, tiny, args.ingest_rows)
        if "overhead" in which:
            rows += bench_overhead(eng, url, redis_url, args.model, args.max_tokens, args.rounds, args.trials)
    finally:
        eng.dispose()
        drop_database(admin, name)
    table = Table(title=f"serving benchmarks ({os.cpu_count()} CPUs)")
    for col in ("measure", "setup", "result", "detail", "target", ""):
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(x) for x in row])
    Console().print(table)


if __name__ == "__main__":
    main()
