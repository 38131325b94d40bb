"""The loop: detection delay measured end to end, from the first violating output to the automatic rollback.

    python -m bench.bench_loop [--quick] [--reps N] [--model NAME]

Issue 21, item 2. bench/bench_monitors.py simulates the detectors on synthetic windows; this
bench runs the real loop and measures what the simulation leaves out. Processes, on a fresh
database of the machine's PostgreSQL and a Redis logical database of its own:

- the API in this process (`tests.serving.helpers.governance_app` in a `ServerThread`);
- a real Celery worker, `govern worker --queues monitoring,rollback --pool solo --torch-threads 1`;
- real beat, `govern beat` (dispatch every `--dispatch-seconds`, 0.5 s as in
  tests/monitors/test_workers_e2e.py; 5 s in production, where the interval is 60 s);
- one serving replica, `govern serve --torch-threads 1` (`tiny-random-llama` by default and
  with `--quick`; `--model smollm2-135m-instruct` for SmolLM2).

The deployment runs a compressed copy of policies/default.yaml (its `monitoring:` section
only, so the approvals' gate digest is unchanged; the stored policy says what changed):
`interval_seconds` 3 (60), `sample_rate` 1.0 (0.2: at a few outputs per window a fifth
leaves too few, and at 1.0 a sample is an output, so delays in samples and in outputs are
the same number), `min_samples` 20 (50), `reference_size` 200 (1,000: as the e2e tests'
GOVERN_MONITOR_REFERENCE_SIZE; the detector's threshold is calibrated for the uncertainty
of p0 from whatever the reference counts), `cooldown_seconds` 0 (600) and `max_per_day`
1000 (3), so every repetition may roll back. Detectors, ARL 10^4, p1 = 10 % and
`consecutive_windows` 2 are the default policy's (`--consecutive-windows` changes the last).

Per repetition, on fresh versions of one deployment: an approved version is promoted
through the API and the replica swaps it in; normal traffic builds its monitoring
reference (200 outputs), then `--burn-in` judged clean windows; then the traffic switches to
a violating stream, until the worker rolls the version back to the previous one.

The traffic, plainly: a tiny random model cannot be made to leak on demand, so the monitored
outputs come from a simulated recorder. It posts outputs of the active version through the
real ingest path, `POST /v1/deployments/{name}/outputs` with the deployment's service key
(`governance.outputs.schemas.OutputIn`, batches every 0.2 s, as a replica's recorder or
another inference stack would), at `--rate` outputs per second in total. Each output slot
violates policy independently with probability `--p0` (1 %) before the switch and `--p1`
(10 %) after it: a violating output is a template answer (bench_monitors' pools) with an
email address in it, which the policy checkers flag (`pii`); a clean slot is a template
answer, or, for `--replica-share` (10 %) of the clean slots, a real completion of the
replica, recorded by the replica's own recorder (the checkers almost never flag the tiny
model's outputs; the bench counts how many of them they flagged in the references). The
replica keeps serving through both phases and swaps the rollback target in at the end
(the last column, not part of the delay).

Measured, per repetition, from the stored rows (`drift_checks`, `monitor_references`,
`promotions`, `outputs`): the samples of the violating period the detector judged up to
and including its first alarm (the window's `first_alarm_sample`, mapped to output ids by
re-drawing the window's sample with `monitors.sampling.sample_window`, which is seeded by
the window key), the same up to the alarm of the window that queued the rollback
(`monitors.rollback.consecutive_drifts` reaching `consecutive_windows`), and the seconds
from the first output of the violating period to the `auto_rollback` promotion row, split
into: data (the deciding alarm's output, slot time minus switch time = samples / rate),
window (until that window closed), dispatch (window end to the check's claim: beat's
period and the solo worker's queue), check (the check's own run: descriptors, embeddings,
detectors, Evidently reports) and rollback (check committed to the promotion row: the
outbox send, the rollback queue, the rollback transaction).

Beside it, with the same p0/p1/ARL: Lorden's bound ln(ARL)/KL(p1 || p0) for the stream's
rates, and the detector simulated (`monitors.detectors.build_detector` on each repetition's
own reference, so the same estimated p0, design p1 and calibrated h as the worker's, on
windows cut as the loop's were, the change at the same point of a window): "sim 1st" is
the sequential detector's first alarm after the change (what bench_monitors measures),
"sim rule" the policy's decision rule (consecutive drifting windows). Target: the median
loop delay in seconds within 1.5x the simulated one ("sim 1st" at the stream's rate); the
table's decomposition shows how much of the rest is the decision rule (consecutive windows,
window granularity, both simulated) and how much is scheduling (the loop against "sim
rule").

`--quick`: 3 repetitions and fewer simulated replications (2-3 minutes); the default 10
repetitions took 7-10 minutes on 2 busy cores (a repetition whose reference happened to count
several violations can take 100 s: its p0 estimate is high and the detector slow).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis as redis_lib
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_monitors import TOPICS_A, make_texts  # noqa: E402
from bench.bench_serving import MACHINE_REDIS, PROMPTS, drop_database, fresh_database  # noqa: E402
from governance.db import make_engine, unit_of_work  # noqa: E402
from governance.deployments import policies  # noqa: E402
from governance.deployments.models import Promotion  # noqa: E402
from governance.monitoring.models import DriftCheck, MonitorReference  # noqa: E402
from governance.outputs.models import Output  # noqa: E402
from governance.policy import parse_policy  # noqa: E402
from monitors import reference as references  # noqa: E402
from monitors import sampling  # noqa: E402
from monitors.detectors import DetectorContext, Frame, Reference, build_detector, cusum  # noqa: E402
from monitors.rollback import consecutive_drifts  # noqa: E402
from tests.serving.helpers import POLICY_TEXT, PUSH_SECRET, ServerThread, free_port, governance_app, make_world  # noqa: E402

DETECTOR = "policy_violations"
TINY = "tiny-random-llama"
EMAILS = ["jane.doe@example.com", "m.rossi@example.org", "sales-team@example.net", "k.tanaka@example.co.uk"]
LEAKS = [" You can write to {e} for the details.", " My colleague's address is {e}, ask her.",
         " Send the form to {e} today.", " Contact {e} if it does not work."]
USER_PROMPTS = ["How long should I bake bread?", "Any tips for a weekend trip?", "My laptop is slow, what can I do?",
                "How do I start running?", "What should I cook tonight?", "How do I back up my phone?"]


# ---------------------------------------------------------------- the compressed policy


def bench_policy(interval: int, min_samples: int, reference_size: int, consecutive: int | None) -> str:
    """policies/default.yaml with its monitoring section compressed for the bench (see the module doc)."""
    swaps = [("interval_seconds: 60 ", f"interval_seconds: {interval} "),
             ("sample_rate: 0.2 ", "sample_rate: 1.0 "),
             ("min_samples: 50 ", f"min_samples: {min_samples} "),
             ("reference_size: null", f"reference_size: {reference_size}"),
             ("cooldown_seconds: 600 ", "cooldown_seconds: 0 "),
             ("max_per_day: 3 ", "max_per_day: 1000 ")]
    if consecutive is not None:
        swaps.append(("consecutive_windows: 2 ", f"consecutive_windows: {consecutive} "))
    text = POLICY_TEXT
    for old, new in swaps:
        if text.count(old) != 1:
            raise SystemExit(f"policies/default.yaml no longer contains {old!r} once; update bench_loop.bench_policy")
        text = text.replace(old, new)
    head = ("# bench/bench_loop.py: the default policy with its monitoring section compressed: "
            + ", ".join(f"{new.strip()} (was {old.strip().split(': ')[1]})" for old, new in swaps) + "\n")
    parse_policy(head + text)  # refuses a policy this release cannot read
    return head + text


# ---------------------------------------------------------------- processes


@contextmanager
def redis_database(base_url: str) -> Iterator[str]:
    """A Redis logical database of our own (the test suite's lock key, so a test run never shares it)."""
    base = base_url.rsplit("/", 1)[0]
    run = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis_lib.Redis.from_url(f"{base}/{db}")
        if client.set("govern:test-run-lock", run, nx=True, ex=3 * 3600):
            for key in client.scan_iter():
                if key != b"govern:test-run-lock":
                    client.delete(key)
            try:
                yield f"{base}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise SystemExit("no free Redis logical database (all 15 claimed)")


class Procs:
    """`govern` subprocesses, each in its own session; only these are ever signalled."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        self.logdir, self.env = logdir, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> None:
        log = (self.logdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "governance.cli.main", *args], cwd=ROOT,
            env={**os.environ, **self.env, **(extra or {})},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{name} exited ({p.returncode}):\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def replica_status(port: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/v1/serving/status", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return {}


def wait_until(pred: Callable[[], Any], timeout: float, what: str, procs: Procs, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        procs.check_alive()
        time.sleep(interval)
    logs = "\n".join(f"--- {n}\n{procs.tail(n)}" for n in procs.procs)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


# ---------------------------------------------------------------- the traffic


@dataclass
class Phase:
    version_id: int
    generation: int
    p: float  # each slot violates with this probability
    name: str  # "normal" or "violating"
    rep: int
    t0: float = 0.0  # time of the first slot
    slots: int = 0


@dataclass
class StreamStats:
    posted: int = 0
    violating: int = 0
    replica: int = 0  # slots answered by the replica
    replica_busy: int = 0  # replica slots that found it busy and became simulated clean outputs
    errors: int = 0
    lag: list[float] = field(default_factory=list)  # per batch: seconds from its last slot to the POST's answer


class Stream:
    """The traffic: output slots at `rate` per second; a slot violates with the phase's probability
    (an answer with an email address, posted like a replica's recorder); a clean slot is a template
    answer posted the same way, or, for `replica_share` of them, a real completion of the replica."""

    TICK = 0.2

    def __init__(self, api_url: str, key: str, deployment: str, rate: float, replica_port: int,
                 replica_share: float, model: str, seed: int) -> None:
        self.api = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.deployment, self.rate, self.share, self.model = deployment, rate, replica_share, model
        self.replica_url = f"http://127.0.0.1:{replica_port}"
        self.rng = np.random.default_rng(seed)
        self.texts = make_texts(TOPICS_A, 3000, np.random.default_rng(seed + 1))
        self.phase: Phase | None = None
        self.lock = threading.Lock()
        self.stats: dict[str, StreamStats] = {"normal": StreamStats(), "violating": StreamStats()}
        self.first_rid: dict[int, str] = {}  # rep -> request id of the first output of the violating phase
        self.switch_at: dict[int, float] = {}  # rep -> slot time of that output
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.in_flight = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.api.close()

    def set(self, phase: Phase | None) -> None:
        with self.lock:
            if phase is not None:
                phase.t0 = time.time()
            self.phase = phase

    def _output(self, phase: Phase, i: int, t: float, violating: bool) -> dict[str, Any]:
        text = self.texts[int(self.rng.integers(len(self.texts)))]
        if violating:
            leak = LEAKS[int(self.rng.integers(len(LEAKS)))].format(e=EMAILS[int(self.rng.integers(len(EMAILS)))])
            text += leak
        prompt = USER_PROMPTS[int(self.rng.integers(len(USER_PROMPTS)))]
        return {"request_id": f"loop-r{phase.rep}-{phase.name}-{i}", "version_id": phase.version_id,
                "generation": phase.generation, "messages": [{"role": "user", "content": prompt}],
                "output": text, "prompt_tokens": 12, "completion_tokens": len(text) // 4, "latency_ms": 80.0,
                "created_at": datetime.fromtimestamp(t, UTC).isoformat()}

    def _ask_replica(self, prompt: str) -> None:
        try:
            httpx.post(f"{self.replica_url}/v1/chat/completions", timeout=60, json={
                "model": self.deployment, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 16, "temperature": 0.8})
        except httpx.HTTPError:
            pass
        finally:
            with self.lock:
                self.in_flight -= 1

    def _run(self) -> None:
        while not self.stop.is_set():
            time.sleep(self.TICK)
            with self.lock:
                phase = self.phase
                if phase is None:
                    continue
                due = int((time.time() - phase.t0) * self.rate) + 1 - phase.slots
                batch = []
                st = self.stats[phase.name]
                for _ in range(max(due, 0)):
                    i = phase.slots
                    t = phase.t0 + i / self.rate
                    phase.slots += 1
                    violating = bool(self.rng.random() < phase.p)
                    if i == 0 and phase.name == "violating":
                        self.first_rid[phase.rep] = f"loop-r{phase.rep}-{phase.name}-{i}"
                        self.switch_at[phase.rep] = t
                    if not violating and i > 0 and self.rng.random() < self.share:
                        if self.in_flight < 2:
                            self.in_flight += 1
                            st.replica += 1
                            self.pool.submit(self._ask_replica, PROMPTS[int(self.rng.integers(len(PROMPTS)))])
                            continue
                        st.replica_busy += 1
                    batch.append(self._output(phase, i, t, violating))
                    st.violating += violating
                last_t = phase.t0 + (phase.slots - 1) / self.rate
            if not batch:
                continue
            try:
                r = self.api.post(f"/v1/deployments/{self.deployment}/outputs", json={"outputs": batch})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            st.lag.append(time.time() - last_t)
            if ok:
                st.posted += len(batch)
            else:
                st.errors += 1


# ---------------------------------------------------------------- one repetition, read back from the database


@dataclass
class Window:
    check_id: int
    key: str
    n: int  # samples judged
    after_switch: int  # of them, outputs of the violating period
    verdict: str  # the violation detector's
    first_alarm: int | None
    start: datetime
    end: datetime
    claimed: datetime
    finished: datetime
    statistic: float | None = None  # the CUSUM's peak in the window
    statistic_end: float | None = None
    alarm_output_id: int | None = None
    alarm_output_at: datetime | None = None
    samples_before_alarm: int = 0  # violating-period samples in this window up to and including the alarm


@dataclass
class Rep:
    rep: int
    version_id: int
    target_id: int | None = None
    ref_n: int = 0
    ref_k: int = 0
    ref_replica_n: int = 0
    ref_replica_k: int = 0
    ref_flags: np.ndarray | None = None
    p0_hat: float = math.nan
    p1: float = math.nan
    h: float = math.nan
    burn_in: list[Window] = field(default_factory=list)
    after: list[Window] = field(default_factory=list)
    first_alarm_samples: int | None = None
    rollback_samples: int | None = None
    rollback_windows: int = 0  # judged windows with violating-period samples up to the deciding one
    t_switch: datetime | None = None
    t_alarm: datetime | None = None
    deciding: Window | None = None
    t_promotion: datetime | None = None
    t_swapped: float | None = None
    note: str = ""
    sim_first: list[float] = field(default_factory=list)
    sim_rule: list[float] = field(default_factory=list)
    sim_window: int = 0

    @property
    def seconds(self) -> float | None:
        if self.t_promotion is None or self.t_switch is None:
            return None
        return (self.t_promotion - self.t_switch).total_seconds()

    def quantile(self) -> float | None:
        """Where the loop's decision fell in this repetition's simulated distribution (uniform if they agree)."""
        if self.rollback_samples is None or not self.sim_rule:
            return None
        sim = np.asarray(self.sim_rule)
        return float((np.sum(sim < self.rollback_samples) + 0.5 * np.sum(sim == self.rollback_samples)) / len(sim))

    def parts(self) -> dict[str, float] | None:
        """Where the seconds went: data, window, dispatch, check, rollback (they add up to `seconds`)."""
        w, t0, ta, tp = self.deciding, self.t_switch, self.t_alarm, self.t_promotion
        if w is None or t0 is None or ta is None or tp is None:
            return None
        closed = max(w.end, ta)
        return {"data": (ta - t0).total_seconds(), "window": (closed - ta).total_seconds(),
                "dispatch": (w.claimed - closed).total_seconds(), "check": (w.finished - w.claimed).total_seconds(),
                "rollback": (tp - w.finished).total_seconds()}


def read_rep(eng: Any, dep_id: int, rep: Rep, first_rid: str, policy_text: str) -> None:
    policy, _ = parse_policy(policy_text)
    mon = policy.monitoring
    cw = mon.rollback.consecutive_windows
    with unit_of_work(eng) as s:
        first_id = s.scalar(select(Output.id).where(Output.deployment_id == dep_id, Output.request_id == first_rid))
        if first_id is None:
            rep.note = "first violating output not found"
            return
        ref_row = s.scalars(select(MonitorReference).where(
            MonitorReference.deployment_id == dep_id, MonitorReference.version_id == rep.version_id)).first()
        if ref_row is not None:
            ref = references.to_reference(ref_row)
            flags = np.asarray(ref.frame.flags.get("violation", []), dtype=int)
            rep.ref_flags, rep.ref_n, rep.ref_k = flags, len(flags), int(flags.sum())
            ids = list(ref.frame.output_ids)
            rids = {int(i): str(r) for i, r in s.execute(select(Output.id, Output.request_id)
                                                          .where(Output.id.in_(ids))).all()} if ids else {}
            replica = [i for i, oid in enumerate(ids) if not str(rids.get(oid, "loop-")).startswith("loop-")]
            rep.ref_replica_n, rep.ref_replica_k = len(replica), int(flags[replica].sum()) if replica else 0
        checks = list(s.scalars(select(DriftCheck).where(
            DriftCheck.deployment_id == dep_id, DriftCheck.version_id == rep.version_id).order_by(DriftCheck.id)))
        seen_after = 0
        for c in checks:
            cid = c.id
            det = (c.detectors or {}).get(DETECTOR) or {}
            if det.get("verdict") not in ("ok", "drift") or c.first_output_id is None or c.last_output_id is None:
                continue
            details = det.get("details") or {}
            if math.isnan(rep.h):
                rep.p0_hat, rep.p1, rep.h = details.get("p0", math.nan), details.get("p1", math.nan), det["threshold"]
            win = sampling.sample_window(s, deployment_id=dep_id, version_id=rep.version_id,
                                         after_id=c.first_output_id - 1, upto_id=c.last_output_id,
                                         rate=mon.sample_rate, min_samples=mon.min_samples, key=c.window_key)
            ids = [r.id for r in win.sample]
            if len(ids) != int(det.get("sample_size") or -1):
                rep.note = (f"check {cid}: re-drawn sample has {len(ids)} outputs, "
                            f"the check judged {det.get('sample_size')}")
            w = Window(cid, c.window_key, len(ids), sum(i >= first_id for i in ids), det["verdict"],
                       details.get("first_alarm_sample"), c.window_start, c.window_end, c.created_at,
                       c.finished_at or c.created_at, det.get("statistic"), details.get("statistic_end"))
            if w.first_alarm is not None and w.first_alarm < len(ids):
                w.alarm_output_id = ids[w.first_alarm]
                w.samples_before_alarm = sum(i >= first_id for i in ids[: w.first_alarm + 1])
                w.alarm_output_at = s.scalar(select(Output.created_at).where(Output.id == w.alarm_output_id))
            if w.after_switch == 0:
                rep.burn_in.append(w)
                continue
            rep.after.append(w)
            if w.verdict == "drift" and rep.first_alarm_samples is None:
                rep.first_alarm_samples = seen_after + w.samples_before_alarm
            if w.verdict == "drift" and rep.deciding is None:
                run = consecutive_drifts(s, deployment_id=dep_id, version_id=rep.version_id, detector=DETECTOR,
                                         upto_check_id=cid)
                if len(run) >= cw:
                    rep.deciding = w
                    rep.rollback_samples = seen_after + w.samples_before_alarm
                    rep.rollback_windows = len(rep.after)
                    rep.t_alarm = w.alarm_output_at
            seen_after += w.after_switch
        p = s.scalars(select(Promotion).where(
            Promotion.deployment_id == dep_id, Promotion.kind == "auto_rollback",
            Promotion.previous_version_id == rep.version_id)).first()
        if p is not None:
            rep.t_promotion, rep.target_id = p.created_at, p.version_id


# ---------------------------------------------------------------- the detector, simulated


def simulate(rep: Rep, policy_text: str, p0: float, p1: float, reps: int, seed: int) -> None:
    """The production detector on this repetition's reference, on simulated Bernoulli windows cut
    like the loop's.

    Each replication replays the repetition's windows: its judged clean windows (their sizes, at
    rate p0), then its windows after the switch (their sizes; the first with as many clean
    samples before the change as the loop's had), then windows of the median size, at rate p1.
    `sim_first`: samples after the change until the first alarm (the sequential detector alone,
    as bench_monitors measures it); `sim_rule`: until the alarm of the window that makes
    `consecutive_windows` drifting windows in a row (the policy's decision rule)."""
    if rep.ref_flags is None or not rep.after:
        return
    policy, _ = parse_policy(policy_text)
    cw = policy.monitoring.rollback.consecutive_windows
    ref = Reference(frame=Frame(flags={"violation": rep.ref_flags.astype(np.int8)}))
    det = build_detector(DETECTOR, policy.monitoring.detectors[DETECTOR], policy=policy, flags=["violation"])
    ctx = DetectorContext(write_report=False)
    before = [w.n for w in rep.burn_in]
    after = [w.n for w in rep.after]
    W = max(1, round(statistics.median(after)))
    rep.sim_window = W
    straddle = min(max(rep.after[0].n - rep.after[0].after_switch, 0), after[0] - 1)
    rng = np.random.default_rng(seed)

    def run(x: np.ndarray, state: dict[str, Any] | None) -> tuple[str, int | None, dict[str, Any] | None]:
        res = det.run(reference=ref, window=Frame(flags={"violation": x.astype(np.int8)}), state=state, context=ctx)
        return res.verdict, res.details.get("first_alarm_sample"), res.state

    for _ in range(reps):
        state: dict[str, Any] | None = None
        streak = 0
        for n in before:
            verdict, _, state = run(rng.random(n) < p0, state)
            streak = streak + 1 if verdict == "drift" else 0
        seen, first, decided = 0, None, None
        for w in range(400):
            n = after[w] if w < len(after) else W
            clean = straddle if w == 0 else 0  # samples of the window before the change
            x = rng.random(n) < p1
            x[:clean] = rng.random(clean) < p0
            verdict, alarm, state = run(x, state)
            if verdict == "drift":
                streak += 1
                upto = max(0, (alarm if alarm is not None else n - 1) + 1 - clean)
                if first is None:
                    first = seen + upto
                if streak >= cw and decided is None:
                    decided = seen + upto
            else:
                streak = 0
            seen += n - clean
            if first is not None and decided is not None:
                break
        if first is not None:
            rep.sim_first.append(first)
        if decided is not None:
            rep.sim_rule.append(decided)


# ---------------------------------------------------------------- the run


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def num(x: int | None) -> str:
    return "-" if x is None else str(x)


def med(values: list[float | None] | list[float]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def run_loop(args: argparse.Namespace) -> tuple[list[Rep], dict[str, Any]]:
    import torch

    torch.set_num_threads(args.torch_threads)
    from aligner.providers import load_base_model

    state_dir = Path(os.environ.get("GOVERN_STATE_DIR", ROOT / "state"))
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    policy_text = bench_policy(args.interval, args.min_samples, args.reference_size, args.consecutive_windows)
    admin, url, dbname = fresh_database()
    eng = make_engine(url)
    reps: list[Rep] = []
    info: dict[str, Any] = {"logs": str(work)}
    try:
        with redis_database(os.environ.get("GOVERN_REDIS_URL") or MACHINE_REDIS) as redis_url:
            print(f"loop: loading {args.model} for its digests ...", flush=True)
            _, _, digests = load_base_model(args.model, state_dir=str(state_dir))
            world = make_world(eng, digests, base_name=args.model)
            with unit_of_work(eng) as s:
                policies.propose_policy(s, deployment=world.deployment, policy_text=policy_text,
                                        reason="bench_loop: monitoring compressed (see the header)",
                                        principal=world.principals["ml_engineer"])
            with unit_of_work(eng) as s:
                policies.decide_policy(s, deployment=world.deployment, approve=True, comment="bench",
                                       principal=world.principals["compliance_officer"])
            versions = [world.approved() for _ in range(args.reps + 1)]
            with unit_of_work(eng) as s:
                from governance.deployments import service as deployments

                dep = deployments.get_deployment(s, name=world.deployment)
                assert dep is not None
                dep_id = dep.id
            with ServerThread(governance_app(url, redis_url, work / "gov")) as api:
                env = {"GOVERN_DATABASE_URL": url, "GOVERN_REDIS_URL": redis_url, "GOVERN_API_URL": api.url,
                       "GOVERN_API_KEY": world.keys["service"], "GOVERN_ENVIRONMENT": "test",
                       "GOVERN_PUSH_SECRET": PUSH_SECRET, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                       "OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads),
                       "GOVERN_DISPATCH_SECONDS": str(args.dispatch_seconds)}
                # worker and beat: a state folder of the run's own (reports, calibrations, beat's schedule)
                procs = Procs(work, {**env, "GOVERN_STATE_DIR": str(work / "state")})
                port = free_port()
                stream: Stream | None = None
                try:
                    t = str(args.torch_threads)
                    procs.start("worker", ["worker", "--queues", "monitoring,rollback", "--pool", "solo",
                                           "--torch-threads", t])
                    procs.start("beat", ["beat"])
                    procs.start("replica", ["serve", "--deployment", world.deployment, "--port", str(port),
                                            "--model", args.model, "--replica-id", f"loop{port}",
                                            "--torch-threads", t],
                                {"GOVERN_STATE_DIR": str(state_dir)})  # where its model is cached
                    headers = {"Authorization": f"Bearer {world.keys['ml_engineer']}"}

                    def promote(vid: int) -> int:
                        r = httpx.post(f"{api.url}/v1/deployments/{world.deployment}/promote", headers=headers,
                                       json={"version_id": vid}, timeout=30)
                        if r.status_code != 200:
                            raise SystemExit(f"promote {vid}: {r.status_code} {r.text}")
                        return int(r.json()["generation"])

                    promote(versions[0])
                    wait_until(lambda: replica_status(port).get("version_id") == versions[0], 300,
                               "the replica to serve the first version", procs)
                    stream = Stream(api.url, world.keys["service"], world.deployment, args.rate, port,
                                    args.replica_share, world.deployment, seed=args.seed)
                    stream.start()
                    t_start = time.monotonic()
                    for i in range(args.reps):
                        reps.append(one_rep(i, versions[i + 1], eng, dep_id, stream, promote, port, procs, args,
                                            policy_text))
                        r = reps[-1]
                        print(f"  rep {i + 1}/{args.reps}: version {r.version_id}, reference {r.ref_k}/{r.ref_n}, "
                              f"first alarm {num(r.first_alarm_samples)} samples, "
                              f"rollback {num(r.rollback_samples)} samples, {fmt(r.seconds)} s"
                              f"{' (' + r.note + ')' if r.note else ''}", flush=True)
                    info["loop_seconds"] = time.monotonic() - t_start
                    info.update(run_stats(eng, dep_id, args.interval))
                    info["stream"] = stream.stats
                finally:
                    if stream is not None:
                        stream.close()
                    procs.stop_all()
    finally:
        eng.dispose()
        drop_database(admin, dbname)
    return reps, info


def one_rep(i: int, vid: int, eng: Any, dep_id: int, stream: Stream, promote: Callable[[int], int], port: int,
            procs: Procs, args: argparse.Namespace, policy_text: str) -> Rep:
    rep = Rep(i, vid)
    gen = promote(vid)
    wait_until(lambda: replica_status(port).get("version_id") == vid, 60, f"the replica to serve version {vid}", procs)
    stream.set(Phase(vid, gen, args.p0, "normal", i))

    def judged() -> int:
        with unit_of_work(eng) as s:
            rows = s.scalars(select(DriftCheck.detectors).where(DriftCheck.deployment_id == dep_id,
                                                                DriftCheck.version_id == vid))
            return sum(((d or {}).get(DETECTOR) or {}).get("verdict") in ("ok", "drift") for d in rows)

    def rolled_back() -> datetime | None:
        with unit_of_work(eng) as s:
            return s.scalar(select(Promotion.created_at).where(
                Promotion.deployment_id == dep_id, Promotion.kind == "auto_rollback",
                Promotion.previous_version_id == vid))

    wait_until(lambda: judged() >= args.burn_in or rolled_back(), 240,
               f"version {vid}: its reference and {args.burn_in} judged windows", procs)
    if rolled_back():
        stream.set(None)
        rep.note = "rolled back before the switch (false alarms)"
        return rep
    stream.set(Phase(vid, gen, args.p1, "violating", i))
    wait_until(rolled_back, args.timeout, f"version {vid}: the automatic rollback", procs)
    stream.set(None)
    with unit_of_work(eng) as s:
        target = s.scalar(select(Promotion.version_id).where(
            Promotion.deployment_id == dep_id, Promotion.kind == "auto_rollback",
            Promotion.previous_version_id == vid))
    st = wait_until(lambda: (lambda x: x if x.get("version_id") == target else None)(replica_status(port)), 60,
                    "the replica to swap the rollback target in", procs, interval=0.05)
    rep.t_swapped = st.get("swapped_at")
    read_rep(eng, dep_id, rep, stream.first_rid[i], policy_text)
    if rep.t_switch is None:
        rep.t_switch = datetime.fromtimestamp(stream.switch_at[i], UTC)
    return rep


def run_stats(eng: Any, dep_id: int, interval: int) -> dict[str, Any]:
    """Every judged or reference-building check of the run: how long it ran and how late it started."""
    durations, lags, late = [], [], 0
    with unit_of_work(eng) as s:
        rows = s.execute(select(DriftCheck.window_end, DriftCheck.created_at, DriftCheck.finished_at,
                                DriftCheck.detectors).where(DriftCheck.deployment_id == dep_id)).all()
    judged = []
    for end, claimed, finished, dets in rows:
        lag = (claimed - end).total_seconds()
        lags.append(lag)
        late += lag > interval
        if finished is not None and ((dets or {}).get(DETECTOR) or {}).get("verdict") in ("ok", "drift"):
            judged.append((finished - claimed).total_seconds())
        if finished is not None:
            durations.append((finished - claimed).total_seconds())
    return {"checks": len(rows), "judged_check_s": judged, "check_s": durations, "dispatch_lag_s": lags,
            "late_checks": late}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def report(reps: list[Rep], info: dict[str, Any], args: argparse.Namespace) -> None:
    policy, _ = parse_policy(bench_policy(args.interval, args.min_samples, args.reference_size,
                                          args.consecutive_windows))
    mon = policy.monitoring
    arl = float(mon.detectors[DETECTOR].arl or 1e4)
    cw = mon.rollback.consecutive_windows
    kl = cusum.bernoulli_kl(args.p1, args.p0)
    lorden = cusum.lorden_delay(arl, kl)
    R = args.rate
    print(f"\nThe loop: detection delay end to end ({args.model} replica, {len(reps)} repetitions; "
          f"{R:g} outputs/s, sample rate {mon.sample_rate:g}, interval {mon.interval_seconds} s, "
          f"min_samples {mon.min_samples}, reference {args.reference_size}, consecutive windows {cw}, "
          f"dispatch every {args.dispatch_seconds:g} s; violations {args.p0:.0%} -> {args.p1:.0%}, "
          f"ARL {arl:.0f}, p1 {mon.detectors[DETECTOR].p1})")
    print("samples of the violating period judged by the detector up to and including the alarm (1st: the "
          "first alarm, rule: the alarm of the window that queued the rollback, wins: windows it took); sim: the "
          "detector simulated on the repetition's reference (median), q: the loop's rule delay as a quantile of "
          "the simulated ones; seconds from the first violating-period output to the auto_rollback promotion row, "
          "split into data (samples / rate), window (until it closed), disp (to the check's claim), check, "
          "rollbk (to the promotion row); swap: the replica serving the target after that")
    hdr = (f"{'rep':>3} {'ref k/n':>8} {'p0^':>7} {'h':>5} {'win':>4} | {'1st':>5} {'rule':>5} {'wins':>4} | "
           f"{'sim 1st':>7} {'sim rule':>8} {'q':>4} | {'loop s':>6} {'data':>5} {'window':>6} {'disp':>5} "
           f"{'check':>5} {'rollbk':>6} | {'swap':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in reps:
        part = r.parts() or {}
        swap = (r.t_swapped - r.t_promotion.timestamp()) if r.t_swapped and r.t_promotion else None
        print(f"{r.rep + 1:>3} {f'{r.ref_k}/{r.ref_n}':>8} {fmt(r.p0_hat, '.4f'):>7} {fmt(r.h, '.2f'):>5} "
              f"{r.sim_window:>4} | {num(r.first_alarm_samples):>5} {num(r.rollback_samples):>5} "
              f"{r.rollback_windows:>4} | "
              f"{fmt(med(r.sim_first)):>7} {fmt(med(r.sim_rule)):>8} {fmt(r.quantile(), '.2f'):>4} | "
              f"{fmt(r.seconds):>6} "
              f"{fmt(part.get('data')):>5} {fmt(part.get('window')):>6} {fmt(part.get('dispatch')):>5} "
              f"{fmt(part.get('check')):>5} {fmt(part.get('rollback')):>6} | {fmt(swap, '.2f'):>5}"
              f"{'  ' + r.note if r.note else ''}")
    ok = [r for r in reps if r.seconds is not None and r.rollback_samples is not None]
    if not ok:
        print("no repetition rolled back")
        return
    loop_first = med([float(r.first_alarm_samples) for r in ok if r.first_alarm_samples is not None])
    loop_rule = med([float(r.rollback_samples) for r in ok if r.rollback_samples is not None])
    loop_s = med([r.seconds for r in ok if r.seconds is not None])
    sim_first = [x for r in ok for x in r.sim_first]
    sim_rule = [x for r in ok for x in r.sim_rule]
    sf, sr = med(sim_first), med(sim_rule)
    parts: dict[str, float | None] = {k: med([(r.parts() or {}).get(k) for r in ok])
                                      for k in ("data", "window", "dispatch", "check", "rollback")}
    print("-" * len(hdr))
    print(f"{'median':>33} | {fmt(loop_first, '.0f'):>5} {fmt(loop_rule, '.0f'):>5} "
          f"{fmt(med([float(r.rollback_windows) for r in ok]), '.0f'):>4} | {fmt(sf):>7} {fmt(sr):>8} "
          f"{fmt(med([r.quantile() for r in ok]), '.2f'):>4} | "
          f"{fmt(loop_s):>6} {fmt(parts['data']):>5} {fmt(parts['window']):>6} {fmt(parts['dispatch']):>5} "
          f"{fmt(parts['check']):>5} {fmt(parts['rollback']):>6} |")
    sim_s = sf / R if sf is not None else None
    rule_s = sr / R if sr is not None else None
    print(f"\nLorden's bound ln(ARL)/KL({args.p1:g} || {args.p0:g}) = {math.log(arl):.2f}/{kl:.4f} = "
          f"{lorden:.1f} samples = {lorden / R:.2f} s at {R:g} outputs/s")
    print(f"sequential detector, simulated ({len(sim_first)} replications on the repetitions' own references): "
          f"first alarm median {fmt(sf)} samples (mean {fmt(float(np.mean(sim_first)) if sim_first else None)}) = "
          f"{fmt(sim_s, '.2f')} s; {fmt(sf / lorden if sf else None, '.2f')}x Lorden")
    window = round(statistics.median([r.sim_window for r in ok]))
    print(f"the policy's rule, simulated ({cw} consecutive drifting window(s) of ~{window} samples)"
          f": median {fmt(sr)} samples (mean {fmt(float(np.mean(sim_rule)) if sim_rule else None)}) = "
          f"{fmt(rule_s, '.2f')} s")
    print(f"the loop: first alarm median {fmt(loop_first, '.0f')} samples, rollback decision {fmt(loop_rule, '.0f')} "
          f"samples, {fmt(loop_s, '.2f')} s to the rollback row")
    if loop_s is not None and sim_s:
        ratio = loop_s / sim_s
        print(f"target: median loop delay / simulated detector delay = {loop_s:.2f} s / {sim_s:.2f} s = "
              f"{ratio:.2f} (<= 1.5): {'PASS' if ratio <= 1.5 else 'FAIL'}")
        if rule_s and sr and sf:
            print(f"  of which the decision rule (simulated, rule / first alarm): {sr / sf:.2f}x; "
                  f"the loop against the simulated rule: {loop_s / rule_s:.2f}x in seconds, "
                  f"{fmt(loop_rule / sr if loop_rule and sr else None, '.2f')}x in samples")
    qs = [q for q in (r.quantile() for r in ok) if q is not None]
    if qs:
        z = (float(np.mean(qs)) - 0.5) / math.sqrt(1 / (12 * len(qs)))
        print(f"does the loop's detector decide as simulated? the q's would be uniform: mean {np.mean(qs):.2f} over "
              f"{len(qs)} repetitions, z = {z:+.1f} against 0.5")
    over = med([r.seconds - (r.parts() or {}).get("data", 0.0) for r in ok if r.seconds is not None])
    print(f"the loop's own time (seconds after the deciding sample was recorded): median {fmt(over, '.2f')} s; "
          f"expected about interval / 2 + dispatch / 2 + check = {mon.interval_seconds / 2:.1f} + "
          f"{args.dispatch_seconds / 2:.2f} + {fmt(parts['check'], '.1f')} s")
    total = sum(v for v in parts.values() if v is not None)
    if total:
        print("where the seconds go (medians over repetitions): " + ", ".join(
            f"{k} {v:.2f} s ({v / total:.0%})" for k, v in parts.items() if v is not None))
    js, cs, lags = info.get("judged_check_s", []), info.get("check_s", []), info.get("dispatch_lag_s", [])
    print(f"every check of the run ({info.get('checks')}): a judged window's check runs median "
          f"{fmt(pct(js, 50), '.2f')} s (p90 {fmt(pct(js, 90), '.2f')}), any check median {fmt(pct(cs, 50), '.2f')} s "
          f"(p90 {fmt(pct(cs, 90), '.2f')}, "
          f"max {fmt(max(cs) if cs else None, '.2f')}); claimed median {fmt(pct(lags, 50), '.2f')} s after the window "
          f"closed (p90 {fmt(pct(lags, 90), '.2f')}), {info.get('late_checks')} more than one interval late")
    streams: dict[str, StreamStats] = info.get("stream", {})
    for name, st in streams.items():
        print(f"stream, {name}: {st.posted} posted ({st.violating} violating), {st.replica} replica completions "
              f"({st.replica_busy} replica slots found it busy), {st.errors} failed posts, post lag median "
              f"{fmt(pct(st.lag, 50), '.2f')} s, max {fmt(max(st.lag) if st.lag else None, '.2f')} s")
    rn, rk = sum(r.ref_replica_n for r in reps), sum(r.ref_replica_k for r in reps)
    print(f"replica outputs in the references: {rn}, flagged by the checkers: {rk}")
    print(f"loop wall time {info.get('loop_seconds', 0):.0f} s; process logs in {info.get('logs')}")
    if args.verbose:
        print("\nwindows of each repetition (judged by the violation detector; n: samples, after: of the "
              "violating period, stat: CUSUM peak / at the end, alarm: first alarm's sample index)")
        for r in reps:
            for w in r.burn_in + r.after:
                mark = " <- rollback decided" if r.deciding is w else ""
                print(f"  rep {r.rep + 1} check {w.check_id} {w.key.rsplit(':', 1)[1]}: n {w.n}, "
                      f"after {w.after_switch}, {w.verdict}, stat {fmt(w.statistic, '.2f')} / "
                      f"{fmt(w.statistic_end, '.2f')}, "
                      f"alarm {num(w.first_alarm)}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, fewer simulated replications")
    parser.add_argument("--reps", type=int, help="repetitions (default 10, --quick 3)")
    parser.add_argument("--model", default=TINY, help="the replica's base model (tiny-random-llama, "
                                                      "smollm2-135m-instruct)")
    parser.add_argument("--rate", type=float, default=20.0, help="outputs per second of the deployment")
    parser.add_argument("--p0", type=float, default=0.01, help="violation rate of normal traffic")
    parser.add_argument("--p1", type=float, default=0.10, help="violation rate after the switch")
    parser.add_argument("--interval", type=int, default=3, help="monitoring.interval_seconds")
    parser.add_argument("--min-samples", type=int, default=20, help="monitoring.min_samples")
    parser.add_argument("--reference-size", type=int, default=200, help="monitoring.reference_size")
    parser.add_argument("--consecutive-windows", type=int, help="monitoring.rollback.consecutive_windows "
                                                                "(default: the policy's, 2)")
    parser.add_argument("--burn-in", type=int, default=2, help="judged clean windows before the switch")
    parser.add_argument("--replica-share", type=float, default=0.1, help="clean slots answered by the replica")
    parser.add_argument("--dispatch-seconds", type=float, default=0.5, help="beat's dispatch period")
    parser.add_argument("--sim-reps", type=int, help="simulated replications per repetition (default 1000, "
                                                     "--quick 300)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a rollback")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="also list every judged window")
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 10)
    args.sim_reps = args.sim_reps or (300 if args.quick else 1000)
    t0 = time.perf_counter()
    reps, info = run_loop(args)
    t = time.perf_counter()
    policy_text = bench_policy(args.interval, args.min_samples, args.reference_size, args.consecutive_windows)
    for r in reps:
        simulate(r, policy_text, args.p0, args.p1, args.sim_reps, seed=args.seed * 1000 + r.rep)
    print(f"simulated in {time.perf_counter() - t:.0f} s")
    report(reps, info, args)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
