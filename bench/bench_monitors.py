"""Statistics of the drift detectors: false alarms on clean streams, detection delay on shifts.

    .venv/bin/python bench/bench_monitors.py [--quick]

Streams are synthetic but drawn from realistic descriptor distributions: a pool of
template-generated assistant answers (several everyday topics) is described with the
production code (:func:`monitors.descriptors.describe`: lengths, VADER sentiment,
checker flags, all-MiniLM-L6-v2 embeddings); clean windows resample that pool, and a
second pool on a new topic (similar lengths and tone) provides the embedding-only shift.
Violation flags are Bernoulli draws at the stated rates. Every detector is the
production class, run window by window with its state carried, as the check runs it.

Table 1, false alarms per check: over clean windows spread over many independent
references (so the reference's own estimation error counts too: the budget is a promise
averaged over references), the share of windows judged "drift", next to the policy
budget per check (window size / ARL for the sequential detectors, alpha =
1/ARL-in-windows for the per-window tests), with a 95% interval clustered by reference
(windows that share a reference are not independent; see ``interval``). The number of
windows differs per detector (FALSE_ALARM_PLAN): enough that the interval is about
+-25% of the budget or better where a window is cheap (at a budget of 0.005 a rate is
measured to +-10% only with ~40,000 windows); the Gaussian CUSUMs calibrate a threshold
per reference (~10 s), so they get fewer references with more windows each. "ok" means
the rate is at or under the budget, "ok (noise)" that it is over it by less than its
interval allows (the interval's lower end is under the budget).

Table 2, detection delay: the change starts at a window boundary after a clean burn-in;
the delay is the number of post-change samples until the first alarm, averaged over
replications (a fresh reference every 10), next to the Lorden bound ln(ARL)/KL for the
same shift and budget. KL: KL(p1||p0) for the violation rates; for "length mean +x sd"
the shifted stream draws real rows with exponentially tilted weights (more long
answers, and with them more words) and KL is that tilt's exact KL; for the new topic
(a share of outputs from the other pool) |delta|^2/2 of the embedding mean shift in
whitened units (the Gaussian approximation). Lorden's bound is first-order in ln(ARL),
so at ARL 10^4 a CUSUM can come in under it (its h is below ln(ARL)); the target is
"within 2x". Wall time = samples / (sample rate 0.2 x an assumed 250 outputs/minute).

The embedding-topic detector does not watch the mean: it runs a Bernoulli CUSUM on a
per-output "novel" flag (T^2 in the reference's principal components or residual energy
outside them, above the reference's out-of-sample 95% point; see
monitors/detectors/sequential.py). So its rows carry a second theory column, "flag":
ln(ARL)/KL(q1 || q0) for the flag itself under the same shift and the same ARL, with q0
the flag rate of clean outputs and q1 = (1 - share) q0 + share r, r the rate on the
new-topic pool, both measured exactly on the pools for each reference. That is Lorden's
bound for any detector of the flag stream, the fair yardstick of how well the CUSUM is
tuned. The mean-shift column stays as the issue defines it; the detector comes in far
under it because a new topic is not a Gaussian mean shift: its outputs land outside the
reference's subspace, which carries much more information (KL) than the mean moving
inside 10 components. "within 2x" requires both ratios <= 2 on these rows.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitors.detectors import DetectorContext, Frame, Reference, build_detector, cusum
from monitors.detectors.sequential import fit_novelty
from monitors.reference import novelty_model, whiten

WINDOW = 50  # the default policy's min_samples
ARL = 10_000.0  # the default policy's policy_violations ARL (samples)
P0 = 0.01
REF_SIZE = 1000
REPS_PER_REFERENCE = 10
OUTPUTS_PER_MINUTE = 250.0
SAMPLE_RATE = 0.2

TOPICS_A = {
    "cooking": ["Preheat the oven to {n}0 degrees and let the dough rest for {m} minutes.",
                "Add a pinch of salt, then stir the sauce until it thickens.",
                "You can swap butter for olive oil in most savoury recipes.",
                "Roast the vegetables for about {m} minutes, turning them once.",
                "A sharp knife is safer than a dull one because it slips less."],
    "travel": ["The train from the airport to the centre takes about {m} minutes.",
               "Book the museum tickets online to skip the queue in the morning.",
               "Pack a light jacket, evenings by the coast can get cool.",
               "Most hotels let you store luggage after check-out for free.",
               "The old town is easy to explore on foot in a single day."],
    "computers": ["Restart the router and wait {m} seconds before reconnecting.",
                  "Open the settings, choose Updates, and install the latest version.",
                  "Clearing the browser cache often fixes pages that load badly.",
                  "Back up your files to an external drive at least once a week.",
                  "Use a password manager so every account gets its own password."],
    "fitness": ["Start with {m} minutes of brisk walking and build up slowly.",
                "Stretch gently after the workout, not before it.",
                "Drink water regularly, especially on warm days.",
                "Two or three strength sessions a week are enough for most people.",
                "Rest days matter as much as training days for progress."],
}
TOPICS_B = {
    "astronomy": ["The telescope needs about {m} minutes to cool before the images get sharp.",
                  "Jupiter rises after sunset this month and is easy to find in the east.",
                  "A red torch keeps your eyes adapted to the dark sky.",
                  "The Andromeda galaxy is visible from dark sites without any optics.",
                  "Meteor showers are best after midnight when the sky faces forward."],
    "sailing": ["Reef the mainsail early when the wind rises above {n} knots.",
                "Check the tide tables before leaving the harbour in the morning.",
                "Keep the jib sheets free so you can tack quickly.",
                "A bowline knot holds well and is easy to untie later.",
                "Wear a life jacket on deck whenever the boat is moving."],
}
OPENERS = ["", "Sure! ", "Good question. ", "Here is what I would do. ", "Happy to help. "]
CLOSERS = ["", " Let me know if you need more detail.", " I hope this helps.", " Enjoy!"]


def make_texts(topics: dict[str, list[str]], n: int, rng: np.random.Generator) -> list[str]:
    names = sorted(topics)
    out = []
    for _ in range(n):
        topic = topics[names[rng.integers(len(names))]]
        k = int(rng.integers(1, 5))
        picks = rng.choice(len(topic), size=min(k, len(topic)), replace=False)
        body = " ".join(topic[i].format(n=int(rng.integers(1, 30)), m=int(rng.integers(2, 60))) for i in picks)
        out.append(OPENERS[rng.integers(len(OPENERS))] + body + CLOSERS[rng.integers(len(CLOSERS))])
    return out


@dataclass
class Pools:
    clean: Frame
    topic: Frame


def build_pools(n_clean: int, n_topic: int, seed: int = 1) -> Pools:
    """Describe the two pools (cached under state/cache: embedding them is the slow part)."""
    import hashlib
    import json
    from pathlib import Path

    from monitors.descriptors import OutputRecord, describe

    rng = np.random.default_rng(seed)
    a = make_texts(TOPICS_A, n_clean, rng)
    b = make_texts(TOPICS_B, n_topic, rng)
    digest = hashlib.sha256(json.dumps([a, b]).encode()).hexdigest()[:16]
    cache = Path("state/cache/bench_monitors") / f"pools-{digest}.npz"
    if cache.exists():
        data = np.load(cache)
        return Pools(*(_unpack(data, p) for p in ("clean", "topic")))
    clean = describe([OutputRecord(i, "question", t) for i, t in enumerate(a)])
    topic = describe([OutputRecord(i, "question", t) for i, t in enumerate(b)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {**_pack(clean, "clean"), **_pack(topic, "topic")}
    np.savez_compressed(cache, **arrays)
    return Pools(clean, topic)


def _pack(frame: Frame, prefix: str) -> dict[str, np.ndarray]:
    out = {f"{prefix}.num.{k}": v for k, v in frame.numeric.items()}
    out.update({f"{prefix}.flag.{k}": v for k, v in frame.flags.items()})
    if frame.embeddings is not None:
        out[f"{prefix}.emb"] = frame.embeddings
    return out


def _unpack(data: Any, prefix: str) -> Frame:
    numeric = {k.split(".", 2)[2]: data[k] for k in data.files if k.startswith(f"{prefix}.num.")}
    flags = {k.split(".", 2)[2]: data[k] for k in data.files if k.startswith(f"{prefix}.flag.")}
    emb = data[f"{prefix}.emb"] if f"{prefix}.emb" in data.files else None
    return Frame(numeric=numeric, flags=flags, embeddings=emb)


def take(pool: Frame, idx: np.ndarray, violations: np.ndarray | None = None) -> Frame:
    flags = {k: v[idx] for k, v in pool.flags.items()}
    if violations is not None:
        flags["violation"] = violations.astype(np.int8)
    return Frame(numeric={k: v[idx] for k, v in pool.numeric.items()}, flags=flags,
                 embeddings=None if pool.embeddings is None else pool.embeddings[idx])


def make_reference(pools: Pools, rng: np.random.Generator) -> tuple[Reference, np.ndarray]:
    """A reference of REF_SIZE clean outputs; returns it and the pool rows the streams draw from.

    The pool stands for the population: the reference and the streams are both iid draws
    from it (with replacement), as production outputs are from the model's distribution.
    Splitting the pool instead would add the stream pool's own sampling error to the
    reference's and overstate false alarms.
    """
    ref_idx = rng.integers(0, pools.clean.n, size=REF_SIZE)
    rest = np.arange(pools.clean.n)
    frame = take(pools.clean, ref_idx, rng.random(REF_SIZE) < P0)
    assert frame.embeddings is not None
    emb = np.asarray(frame.embeddings, dtype=float)
    mean, comps, proj = whiten(emb)  # as monitors.reference.finish builds it
    frame.embeddings = proj
    return Reference(frame=frame, emb_mean=mean, emb_components=comps,
                     emb_novelty=novelty_model(emb, comps)), rest


class Cfg:
    def __init__(self, kind: str, **kw: Any) -> None:
        self.kind, self.rollback = kind, False
        self.arl: float | None = None
        self.p1: float | None = None
        self.shift_sigmas: float | None = None
        self.threshold: float | None = None
        for k, v in kw.items():
            setattr(self, k, v)


DETECTORS = {
    # name: (policy entry, budget per check, what it watches)
    "policy_violations": Cfg("cusum", arl=ARL, p1=0.10),
    "descriptor_means": Cfg("cusum", arl=ARL),
    "embedding_topics": Cfg("cusum", arl=ARL),
    "descriptors": Cfg("evidently", arl=100.0),
    "embeddings": Cfg("evidently_embeddings", arl=100.0),
}


def budget(name: str) -> float:
    cfg = DETECTORS[name]
    arl = float(cfg.arl or 1.0)
    return WINDOW / arl if cfg.kind == "cusum" else 1.0 / arl


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


# detector: (references, windows per reference) for the full run and for --quick
FALSE_ALARM_PLAN: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "policy_violations": ((200, 200), (40, 100)),
    "descriptor_means": ((20, 400), (6, 200)),
    "embedding_topics": ((400, 50), (80, 50)),
    "descriptors": ((200, 50), (40, 50)),
    "embeddings": ((300, 20), (100, 10)),
}


def interval(per_reference: list[int], windows: int) -> tuple[float, float]:
    """A 95% interval for the false-alarm rate from alarms counted per reference.

    Windows that share a reference are not independent: a reference whose estimates came
    out unlucky alarms more on all of them. The rate is a mean over references, so its
    standard error comes from the spread between references (clustered by reference),
    never smaller than the binomial one; the Wilson interval alone would be too narrow.
    """
    k = np.asarray(per_reference, dtype=float)
    refs, total = len(k), len(k) * windows
    rate = float(k.sum() / total)
    lo, hi = wilson(int(k.sum()), total)
    if refs < 2:
        return lo, hi
    se = math.sqrt(float(np.sum((k - rate * windows) ** 2)) / (refs * (refs - 1))) / windows
    return min(lo, max(0.0, rate - 1.96 * se)), max(hi, rate + 1.96 * se)


def false_alarms(pools: Pools, name: str, refs: int, windows: int, seed: int) -> list[int]:
    """Alarms on clean windows, per reference."""
    ctx = DetectorContext(write_report=False)
    counts = []
    for r in range(refs):
        rng = np.random.default_rng(seed * 1000 + r)
        ref, rest = make_reference(pools, rng)
        det = build_detector(name, DETECTORS[name], flags=sorted(ref.frame.flags))
        state = None
        drifts = 0
        for _ in range(windows):
            idx = rng.choice(rest, size=WINDOW)
            win = take(pools.clean, idx, rng.random(WINDOW) < P0)
            res = det.run(reference=ref, window=win, state=state, context=ctx)
            state = res.state
            drifts += res.verdict == "drift"
        counts.append(drifts)
    return counts


@dataclass
class Shift:
    label: str
    detector: str
    kl: float
    apply: Any  # (pools, rest, rng, n) -> Frame


def tilt(z: np.ndarray, delta_sd: float) -> tuple[np.ndarray, float]:
    """Exponential tilting of the empirical distribution of ``z`` that moves its mean by
    ``delta_sd`` sd: weights q_i ~ exp(theta z_i), and the exact KL(q || uniform) in nats.

    Real rows are drawn with these weights, so the shifted stream keeps realistic rows
    (longer answers also have more words) and the Lorden bound uses the exact KL.
    """
    zs = (z - z.mean()) / z.std()
    lo, hi = 0.0, 20.0
    w = np.full(len(zs), 1.0 / len(zs))
    for _ in range(200):
        mid = (lo + hi) / 2
        e = np.exp(mid * zs - np.max(mid * zs))
        w = e / e.sum()
        if float(w @ zs) < delta_sd:
            lo = mid
        else:
            hi = mid
    kl = float(np.sum(w * np.log(np.maximum(w * len(zs), 1e-300))))
    return w, kl


def shifted_window(pools: Pools, rest: np.ndarray, rng: np.random.Generator, *, p: float = P0,
                   weights: np.ndarray | None = None, topic_share: float = 0.0) -> Frame:
    idx = rng.choice(rest, size=WINDOW, p=weights)
    win = take(pools.clean, idx, rng.random(WINDOW) < p)
    if topic_share > 0:
        mask = rng.random(WINDOW) < topic_share
        tidx = rng.integers(0, pools.topic.n, size=WINDOW)
        topic = take(pools.topic, tidx)
        assert win.embeddings is not None and topic.embeddings is not None
        win.embeddings = np.where(mask[:, None], topic.embeddings, win.embeddings)
    return win


def novelty_kl(pools: Pools, ref: Reference, rest: np.ndarray, share: float) -> float:
    """Exact KL(q1 || q0) of the embedding detector's novelty flag under a topic shift.

    q0: the flag rate of a clean output (streams draw uniformly from ``rest``), q1: that of
    a shifted one, (1 - share) q0 + share r with r the rate on the new-topic pool. The flags
    are iid Bernoulli before and after, so ln(ARL)/KL is Lorden's bound for any detector
    that sees the flags (a CUSUM on them is optimal among those).
    """
    model, _ = fit_novelty(ref)
    assert model is not None and pools.clean.embeddings is not None and pools.topic.embeddings is not None
    q0 = float(model.flags(ref, pools.clean.embeddings[rest]).mean())
    r = float(model.flags(ref, pools.topic.embeddings).mean())
    q0 = min(max(q0, 1e-6), 1 - 1e-6)
    q1 = min(max((1 - share) * q0 + share * r, 1e-6), 1 - 1e-6)
    return cusum.bernoulli_kl(q1, q0)


def delay(pools: Pools, name: str, reps: int, seed: int, burn_in: int = 4, max_windows: int = 200,
          tilt_sd: float = 0.0, **shift: Any) -> tuple[float, float, int, float | None, float | None]:
    """(mean delay in samples, its standard error, undetected replications, exact KL of a tilt,
    exact KL of the novelty flag for the embedding detector), KLs averaged over the references."""
    ctx = DetectorContext(write_report=False)
    delays: list[float] = []
    missed = 0
    rng0 = np.random.default_rng(seed)
    kls, flag_kls = [], []
    for r in range(reps):
        if r % REPS_PER_REFERENCE == 0:  # a fresh reference now and then: its estimation error counts
            ref, rest = make_reference(pools, rng0)
            if tilt_sd:
                shift["weights"], kl = tilt(np.log1p(pools.clean.numeric["length"][rest]), tilt_sd)
                kls.append(kl)
            det = build_detector(name, DETECTORS[name], flags=sorted(ref.frame.flags))
            if det.kind == "cusum_embeddings":
                flag_kls.append(novelty_kl(pools, ref, rest, float(shift.get("topic_share", 0.0))))
        rng = np.random.default_rng(seed * 7919 + r)
        state = None
        for _ in range(burn_in):  # a clean stretch: the statistic starts from its steady state
            res = det.run(reference=ref, window=shifted_window(pools, rest, rng), state=state, context=ctx)
            state = res.state
        for w in range(max_windows):
            res = det.run(reference=ref, window=shifted_window(pools, rest, rng, **shift), state=state, context=ctx)
            state = res.state
            if res.verdict == "drift":
                first = res.details.get("first_alarm_sample")
                delays.append(w * WINDOW + (first + 1 if first is not None else WINDOW))
                break
        else:
            missed += 1
    arr = np.asarray(delays) if delays else np.asarray([math.nan])
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return (float(arr.mean()), se, missed, float(np.mean(kls)) if kls else None,
            float(np.mean(flag_kls)) if flag_kls else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and replications")
    parser.add_argument("--false-alarms", metavar="DETECTOR", choices=sorted(DETECTORS),
                        help="only table 1's row of this detector (with --plan), then stop")
    parser.add_argument("--plan", nargs=2, type=int, metavar=("REFS", "WINDOWS"),
                        help="references and windows per reference for --false-alarms (default: the table's)")
    parser.add_argument("--seed", type=int, default=11, help="seed of table 1's streams")
    args = parser.parse_args()
    # The budget is a promise averaged over references (each one's estimation error gives it its
    # own ARL), so the clean windows are spread over many references, not a few long streams.
    reps = 40 if args.quick else 80
    t0 = time.perf_counter()
    pools = build_pools(2000, 600)
    print(f"pools described in {time.perf_counter() - t0:.1f}s: {pools.clean.n} clean, {pools.topic.n} new-topic "
          f"outputs; window {WINDOW}, reference {REF_SIZE}, violation ARL {ARL:.0f} samples, p0 {P0}")

    plan = dict(FALSE_ALARM_PLAN)
    if args.false_alarms:
        refs, windows = args.plan or FALSE_ALARM_PLAN[args.false_alarms][0]
        plan = {args.false_alarms: ((refs, windows), (refs, windows))}
    print("\nFalse alarms per check on clean streams")
    print(f"{'detector':<20}{'refs x win':>10}{'total':>7}{'alarms':>7}{'rate':>9}{'95% interval':>20}{'budget':>9}"
          "  ok")
    for name in plan:
        t = time.perf_counter()
        refs, windows = plan[name][1 if args.quick else 0]
        counts = false_alarms(pools, name, refs, windows, seed=args.seed)
        k, n = sum(counts), refs * windows
        lo, hi = interval(counts, windows)
        b = budget(name)
        within = "yes" if k / n <= b else ("ok (noise)" if lo <= b else "NO")
        print(f"{name:<20}{refs:>5}x{windows:<4}{n:>7}{k:>7}{k / n:>9.4f}{f'[{lo:.4f}, {hi:.4f}]':>20}{b:>9.4f}"
              f"  {within}   ({time.perf_counter() - t:.0f}s)", flush=True)

    if args.false_alarms:
        return
    # The shift sizes, in the reference's own units
    rng = np.random.default_rng(5)
    ref, _ = make_reference(pools, rng)
    topic_proj = ref.project(pools.topic.embeddings)
    assert topic_proj is not None and ref.frame.embeddings is not None
    topic_mean = topic_proj.mean(axis=0) - ref.frame.embeddings.mean(axis=0)
    def emb_kl(share: float) -> float:
        return float(np.sum((share * topic_mean) ** 2) / 2.0)

    shifts = [
        Shift("violations 1% -> 5%", "policy_violations", cusum.bernoulli_kl(0.05, P0), {"p": 0.05}),
        Shift("violations 1% -> 10%", "policy_violations", cusum.bernoulli_kl(0.10, P0), {"p": 0.10}),
        Shift("length mean +0.5 sd", "descriptor_means", 0.0, {"tilt_sd": 0.5}),
        Shift("length mean +1 sd", "descriptor_means", 0.0, {"tilt_sd": 1.0}),
        Shift("new topic, 30% of outputs", "embedding_topics", emb_kl(0.3), {"topic_share": 0.3}),
        Shift("new topic, 60% of outputs", "embedding_topics", emb_kl(0.6), {"topic_share": 0.6}),
    ]
    per_window = {"descriptor_means": "descriptors", "embedding_topics": "embeddings"}
    print(f"\nDetection delay (samples after the change; {reps} replications; theory = ln(ARL)/KL, "
          f"ARL {ARL:.0f}; flag: the same bound for the novelty flag the embedding detector sees)")
    print(f"{'shift':<28}{'detector':<20}{'KL':>8}{'theory':>8}{'delay':>9}{'+-se':>7}{'ratio':>7}"
          f"{'flag KL':>9}{'theory':>8}{'ratio':>7}{'minutes':>9}  within 2x")
    for sh in shifts:
        rows = [sh.detector] + ([per_window[sh.detector]] if sh.detector in per_window else [])
        for det in rows:
            mean, se, missed, exact_kl, flag_kl = delay(pools, det, reps, seed=23, **sh.apply)
            kl = exact_kl if exact_kl is not None else sh.kl
            theory = cusum.lorden_delay(ARL, kl)
            ratio = mean / theory
            ok = ratio <= 2
            flag_cols = f"{'-':>9}{'-':>8}{'-':>7}"
            if flag_kl is not None:
                flag_theory = cusum.lorden_delay(ARL, flag_kl)
                ok = ok and mean / flag_theory <= 2
                flag_cols = f"{flag_kl:>9.4f}{flag_theory:>8.1f}{mean / flag_theory:>7.2f}"
            minutes = mean / (OUTPUTS_PER_MINUTE * SAMPLE_RATE)
            verdict = ("yes" if ok else "NO") if DETECTORS[det].kind == "cusum" else "(per-window test)"
            miss = f" missed {missed}" if missed else ""
            print(f"{sh.label:<28}{det:<20}{kl:>8.4f}{theory:>8.1f}{mean:>9.1f}{se:>7.1f}{ratio:>7.2f}"
                  f"{flag_cols}{minutes:>9.1f}  {verdict}{miss}", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
