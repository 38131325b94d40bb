"""The worker's paired analysis of a rollout: the candidate's answers against the active ones, prompt by prompt.

A rollout's pairs (`governance.outputs.service.rollout_pairs`: the served answer and its
unreturned twin to the same request) are described with the monitors' own code
(:func:`monitors.descriptors.describe`: the gate's policy checkers, the refusal flag,
VADER sentiment, length; MiniLM embeddings through :mod:`monitors.embeddings`), so a pair is
judged exactly like a monitored output. Then, on the pairs of the rollout's current step:

- **policy violations** and **refusal**: the flags paired by prompt. ``b`` = the candidate
  flags where the active does not, ``c`` = the reverse. With no tolerated increase
  (``max_*_increase: 0``) the exact one-sided McNemar test (``b ~ Bin(b + c, 1/2)``); with a
  margin, Tango's score test of ``H0: p_b - p_c <= margin`` (`evaluators.stats.paired_difference_test`:
  the standard score test for a paired difference of proportions, McNemar's at margin 0).
- **sentiment**: the sign-flip test that the mean of (candidate - active) lies below
  ``-max_sentiment_drop`` (the differences shifted by the margin).
- **length**: the log length ratio per pair, ``log1p(len_c) - log1p(len_a)``, tested against
  the band ``[log(1 - c), log(1 + c)]`` with ``c = max_length_ratio_change`` (two sign-flip
  tests, Bonferroni over the two directions).
- **embedding distance**: the mean cosine distance of the twins' embeddings against
  ``max_embedding_distance``, one-sided t test, with a (1 - alpha) t interval. Embeddings cost
  a model run: they are computed when the check decides (``rollout.decide``), or when the
  model is already loaded in this process (cheap); otherwise the check says so, with n = 0.

Each test reports n, statistic, threshold, p-value and the minimum detectable effect at the
policy's alpha and power for this n (STATISTICS.md); Holm over the deciding tests at
``alpha``, and the MDEs of those at Holm's first step, ``alpha / m``.

**When the fixed-n tests are judged.** A fixed-n test looked at every interval would be a
sequential test without the correction, and its false-fail rate would grow with every look.
So they are judged once per step, at the first look that has at least ``min_samples`` pairs,
on every pair that look has; that look always decides (pass or fail), so the step moves on
and no second look at the same pairs happens (a late or redelivered analysis is dropped by
`record_verdict`). Earlier looks are ``pending`` and carry only the sequential detector.

**Early abort.** Every detector of the deployment's ``monitoring.detectors`` that may roll
back (``rollback: true``) and watches a flag with a Bernoulli CUSUM (``kind: cusum`` named
for violations or a flag) runs on the candidate's flags in pair order, its in-control rate
estimated from the active answers of the same pairs (`cusum.estimate_p0`: a half count added,
floored at 0.1 %) and its threshold calibrated to the detector's ARL exactly as the monitor
calibrates it (the same :class:`monitors.detectors.sequential.BernoulliCusum`). If one fires,
the verdict is ``fail`` at once, whatever the number of pairs (shadow and canary). Its false
alarms are the detector's budget, about n / ARL per step, on top of the tests' alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats as sps
from sqlalchemy.orm import Session

from evaluators import stats
from evaluators.checkers import CHECKERS
from governance.deployments import rollouts
from governance.deployments.service import deployment_policy, get_deployment_by_id, get_deployment_or_raise
from governance.outputs import service as outputs
from governance.policy import Policy
from governance.principal import Principal
from monitors.alerting import Notification, raise_monitor_alert
from monitors.descriptors import OutputRecord, describe, prompt_of
from monitors.detectors import DetectorContext, Frame, Reference, build_detector, resolve_kind
from monitors.embeddings import embed, model_loaded

if TYPE_CHECKING:  # annotations only: rooms talk through service functions
    from governance.deployments.models import Rollout
    from governance.outputs.service import Pair

Embedder = Callable[[list[str]], np.ndarray]

# the principal of the rollout worker (service role: `rollout.verdict`, `rollout.advance`, `version.promote`)
ROLLOUT_ACTOR = "monitor/rollout"
MAX_DIFFERING = 20
MAX_TEXT = 2000  # characters of an answer kept in `differing` (the UI shows the start)
SIGN_FLIPS = 10_000  # Monte Carlo sign patterns above the exact enumeration (seeded)
# order of the checks named in `differing`: harm first
_HARM_FIRST = ("violation", "pii", "pii_echo", "toxic", "format", "refusal", "disclaimer", "favourable")


def principal() -> Principal:
    return Principal.for_system(ROLLOUT_ACTOR)


# ------------------------------------------------------------------ the pairs, described


@dataclass
class PairFrames:
    """The step's pairs as two aligned descriptor frames: row i of each is one prompt."""

    request_ids: list[str]
    prompts: list[str]
    active: Frame
    candidate: Frame
    upto_output_id: int = 0  # the highest output id read (what the verdict covers)
    skipped: int = 0  # pairs neither of whose answers is the candidate's (not analysed)

    @property
    def n(self) -> int:
        return len(self.request_ids)

    @property
    def has_embeddings(self) -> bool:
        return self.active.embeddings is not None and self.candidate.embeddings is not None


def describe_pairs(pairs: Sequence[Pair], *, candidate_version_id: int, fmt: Any = None,
                   with_embeddings: bool = False, embedder: Embedder | None = None) -> PairFrames:
    """Descriptors of both answers of every pair, mapped to (active, candidate) by version.

    Shadow: the served answer is the active token's, the twin the candidate's; canary: the
    other way round. A pair where neither (or both) is the candidate's is skipped and counted.
    """
    act: list[OutputRecord] = []
    cand: list[OutputRecord] = []
    request_ids: list[str] = []
    skipped, upto = 0, 0
    for p in pairs:
        upto = max(upto, p.served_id, p.twin_id)
        prompt = prompt_of(p.messages)
        served = OutputRecord(p.served_id, prompt, p.served_output)
        twin = OutputRecord(p.twin_id, prompt, p.twin_output)
        if p.twin_version_id == candidate_version_id and p.served_version_id != candidate_version_id:
            act.append(served)
            cand.append(twin)
        elif p.served_version_id == candidate_version_id and p.twin_version_id != candidate_version_id:
            act.append(twin)
            cand.append(served)
        else:
            skipped += 1
            continue
        request_ids.append(p.request_id)
    frames = PairFrames(request_ids, [r.prompt for r in act], describe(act, fmt=fmt, with_embeddings=False),
                        describe(cand, fmt=fmt, with_embeddings=False), upto, skipped)
    if with_embeddings:
        add_embeddings(frames, embedder)
    return frames


def add_embeddings(frames: PairFrames, embedder: Embedder | None = None) -> None:
    """Both answers' sentence embeddings, in one batch (MiniLM unless ``embedder`` is given)."""
    n = frames.n
    if n == 0:
        return
    vectors = np.asarray((embedder or embed)(frames.active.texts + frames.candidate.texts), dtype=float)
    frames.active.embeddings, frames.candidate.embeddings = vectors[:n], vectors[n:]


def embeddings_wanted(policy: Policy) -> bool:
    """Needed (the check decides) or cheap (the model is already loaded in this process)."""
    return "embedding_distance" in policy.rollout.decide or model_loaded()


# ------------------------------------------------------------------ the tests


def _finite(value: Any) -> Any:
    """Numbers as JSON can hold them (no NaN or infinity), recursively."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _test(name: str, *, n: int, statistic: float | None, threshold: float | None, p_value: float | None,
          mde: float | None, decides: bool, detail: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "n": int(n), "statistic": statistic, "threshold": threshold, "p_value": p_value,
            "mde": mde, "decides": bool(decides), "outcome": "not significant", "detail": detail, **extra}


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.4f}".rstrip("0").rstrip(".") if p < 0.1 else f"{p:.2f}"


def flag_test(name: str, active: np.ndarray, candidate: np.ndarray, *, margin: float, alpha: float, power: float,
              decides: bool, what: str) -> dict[str, Any]:
    """The candidate flags more often than the active, by more than ``margin`` (a share of pairs)?"""
    a = np.asarray(active, dtype=bool)
    c = np.asarray(candidate, dtype=bool)
    n = len(a)
    b_, c_ = int(np.sum(c & ~a)), int(np.sum(a & ~c))
    if margin == 0.0:
        p = stats.mcnemar_exact(b_, c_, "greater").p_value
        how, z = "exact one-sided McNemar", None
    else:
        res = stats.paired_difference_test(b_, c_, n, margin)
        p, z = res.p_value, res.z
        how = f"Tango score test against a tolerated increase of {margin:g}"
    psi = (b_ + c_) / n if n else 0.0
    mde = stats.minimum_detectable_increase(n, psi, alpha, power, margin) if n else None
    detail = (f"candidate {what} on {b_} of {n} prompts where the active does not ({c_} reverse); {how}; "
              f"detects an increase of {_num(mde)} of pairs at alpha {alpha:.3g}, power {power:g}")
    return _test(name, n=n, statistic=(b_ - c_) / n if n else 0.0, threshold=margin, p_value=p, mde=mde,
                 decides=decides, detail=detail, b=b_, c=c_, z=z, active_rate=float(a.mean()) if n else 0.0,
                 candidate_rate=float(c.mean()) if n else 0.0)


def _plan_sd(diffs: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[float, str]:
    """The spread the MDE is planned with: the differences', or (none seen, e.g. identical
    answers) the answers' own, as if the two were independent."""
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if sd > 0.0:
        return sd, "sd of the differences"
    fallback = math.sqrt(float(np.var(a, ddof=1)) + float(np.var(c, ddof=1))) if len(a) > 1 else 0.0
    return fallback, "no spread in the differences: planned with the answers' own"


def sentiment_test(active: np.ndarray, candidate: np.ndarray, *, max_drop: float, alpha: float, power: float,
                   decides: bool) -> dict[str, Any]:
    """The mean of (candidate - active) VADER compound below ``-max_drop``? (sign-flip test, shifted)."""
    a, c = np.asarray(active, dtype=float), np.asarray(candidate, dtype=float)
    d = c - a
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    p = stats.sign_flip_test(d + max_drop, "less", n_resamples=SIGN_FLIPS) if n else 1.0
    sd, how = _plan_sd(d, a, c)
    shift = stats.mean_shift_mde(n, sd, alpha, power)
    drop = max_drop + shift if shift is not None else None
    mde = -drop if drop is not None else None
    detail = (f"mean sentiment change {mean:+.3f} (candidate minus active, VADER compound) against a tolerated "
              f"drop of {max_drop:g}; one-sided sign-flip test; detects a mean drop of {_num(drop)} ({how})")
    return _test("sentiment", n=n, statistic=mean, threshold=-max_drop, p_value=p, mde=mde, decides=decides,
                 detail=detail)


def length_test(active: np.ndarray, candidate: np.ndarray, *, max_change: float, alpha: float, power: float,
                decides: bool) -> dict[str, Any]:
    """The answers' length ratio (geometric mean) outside ``[1 - max_change, 1 + max_change]``?"""
    la, lc = np.log1p(np.maximum(active, 0.0)), np.log1p(np.maximum(candidate, 0.0))
    r = lc - la
    n = len(r)
    upper = math.log1p(max_change)
    lower = math.log1p(-max_change) if max_change < 1.0 else None
    p_up = stats.sign_flip_test(r - upper, "greater", n_resamples=SIGN_FLIPS) if n else 1.0
    p_down = stats.sign_flip_test(r - lower, "less", n_resamples=SIGN_FLIPS) if n and lower is not None else 1.0
    sides = 2 if lower is not None else 1
    p = min(1.0, sides * min(p_up, p_down))
    ratio = math.exp(float(r.mean())) if n else 1.0
    sd, how = _plan_sd(r, la, lc)
    shift = stats.mean_shift_mde(n, sd, alpha / sides, power)
    mde = math.expm1(upper + shift) if shift is not None else None
    band = f"{1 - max_change:g}x to {1 + max_change:g}x" if lower is not None else f"up to {1 + max_change:g}x"
    detail = (f"candidate answers {ratio:.2f}x as long as the active's (geometric mean over pairs) against a "
              f"tolerated {band}; sign-flip tests on the log ratio, both directions; detects a change to "
              f"{_num(1 + mde if mde is not None else None)}x ({how})")
    return _test("length", n=n, statistic=ratio - 1.0, threshold=max_change, p_value=p, mde=mde, decides=decides,
                 detail=detail, p_longer=p_up, p_shorter=p_down if lower is not None else None)


def embedding_test(frames: PairFrames, *, max_distance: float, alpha: float, power: float,
                   decides: bool) -> dict[str, Any]:
    """The twins' mean cosine distance above ``max_distance``? (one-sided t test, t interval)."""
    if not frames.has_embeddings:
        return _test("embedding_distance", n=0, statistic=None, threshold=max_distance, p_value=None, mde=None,
                     decides=decides, detail="not computed: the embedding model is neither needed (not in "
                     "rollout.decide) nor loaded in this worker")
    ea = np.asarray(frames.active.embeddings, dtype=float)
    ec = np.asarray(frames.candidate.embeddings, dtype=float)
    dist = np.clip(1.0 - np.sum(ea * ec, axis=1), 0.0, 2.0)  # unit vectors: 1 - cosine
    n = len(dist)
    mean = float(dist.mean()) if n else 0.0
    sd = float(dist.std(ddof=1)) if n > 1 else 0.0
    if n > 1 and sd > 0.0:
        se = sd / math.sqrt(n)
        p = float(sps.t.sf((mean - max_distance) / se, n - 1))
        half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * se
        interval = [max(mean - half, 0.0), min(mean + half, 2.0)]
    else:
        p = 0.0 if n and mean > max_distance else 1.0
        interval = [mean, mean]
    shift = stats.mean_shift_mde(n, sd, alpha, power)
    mde = max_distance + shift if shift is not None else None
    detail = (f"mean cosine distance between twin answers {mean:.3f} ({1 - alpha:.0%} interval "
              f"{interval[0]:.3f} to {interval[1]:.3f}) against {max_distance:g}; one-sided t test; detects a mean "
              f"of {_num(mde)}")
    return _test("embedding_distance", n=n, statistic=mean, threshold=max_distance, p_value=p, mde=mde,
                 decides=decides, detail=detail, interval=interval, confidence=1 - alpha)


def fixed_tests(frames: PairFrames, policy: Policy) -> list[dict[str, Any]]:
    """The paired tests of one step, Holm over the deciding ones, each with its outcome."""
    rp = policy.rollout
    decide = set(rp.decide)
    alpha_deciding = rp.alpha / max(len(decide), 1)  # the MDE at Holm's first step

    def level(name: str) -> float:
        return alpha_deciding if name in decide else rp.alpha

    act, cand = frames.active, frames.candidate
    tests = [
        flag_test("policy_violations", act.flags["violation"], cand.flags["violation"],
                  margin=rp.max_violation_increase, alpha=level("policy_violations"), power=rp.power,
                  decides="policy_violations" in decide, what="violates policy"),
        flag_test("refusal", act.flags["refusal"], cand.flags["refusal"], margin=rp.max_refusal_increase,
                  alpha=level("refusal"), power=rp.power, decides="refusal" in decide, what="refuses"),
        sentiment_test(act.numeric["sentiment"], cand.numeric["sentiment"], max_drop=rp.max_sentiment_drop,
                       alpha=level("sentiment"), power=rp.power, decides="sentiment" in decide),
        length_test(act.numeric["length"], cand.numeric["length"], max_change=rp.max_length_ratio_change,
                    alpha=level("length"), power=rp.power, decides="length" in decide),
        embedding_test(frames, max_distance=rp.max_embedding_distance, alpha=level("embedding_distance"),
                       power=rp.power, decides="embedding_distance" in decide),
    ]
    deciding = [t for t in tests if t["decides"] and t["p_value"] is not None]
    for t, adj in zip(deciding, stats.holm([t["p_value"] for t in deciding]), strict=True):
        t["p_holm"] = adj
        t["outcome"] = "fail" if adj <= rp.alpha else "pass"
        t["detail"] += f"; Holm-adjusted p = {_p(adj)} over {len(deciding)} deciding tests"
    for t in tests:
        if not t["decides"]:
            if t["p_value"] is not None and t["p_value"] <= rp.alpha:
                t["outcome"] = "fail"
            t["detail"] += "; evidence only (not in rollout.decide)"
    return tests


# ------------------------------------------------------------------ the early abort


def abort_detectors(policy: Policy) -> list[tuple[str, Any]]:
    """The deployment's detectors that may roll back and watch a flag with a Bernoulli CUSUM."""
    flags = [*CHECKERS, "violation"]
    return [(name, cfg) for name, cfg in policy.monitoring.detectors.items()
            if cfg.rollback and resolve_kind(name, cfg.kind, flags)[0] == "cusum_bernoulli"]


def early_abort_tests(frames: PairFrames, policy: Policy, *, cache_dir: Path | None) -> list[dict[str, Any]]:
    """Each rollback-capable flag CUSUM on the candidate's answers, in pair order; in control: the active's."""
    flags = sorted(frames.active.flags)
    out = []
    for name, cfg in abort_detectors(policy):
        det = build_detector(name, cfg, policy=policy, flags=flags)
        res = det.run(reference=Reference(frame=frames.active), window=frames.candidate, state=None,
                      context=DetectorContext(window_key="rollout", cache_dir=cache_dir, write_report=False))
        d = res.details
        flag = str(d.get("flag", getattr(det, "flag", "violation")))
        if res.verdict == "inconclusive":
            t = _test(f"early_abort:{name}", n=frames.n, statistic=None, threshold=None, p_value=None, mde=None,
                      decides=True, detail=f"CUSUM on the candidate's {flag} flag not run yet: "
                      f"{d.get('reason', 'too few pairs')}", kind=res.kind, flag=flag)
        else:
            fired = res.verdict == "drift"
            k_c = int(d.get("violations", 0))
            k_a = int(np.sum(frames.active.flags.get(flag, np.zeros(0))))
            t = _test(
                f"early_abort:{name}", n=frames.n, statistic=res.statistic, threshold=res.threshold, p_value=None,
                mde=None, decides=True,
                detail=(f"CUSUM on the candidate's {flag} flag ({k_c} of {frames.n} pairs; active {k_a}): "
                        f"peak {_num(res.statistic)} {'>=' if fired else '<'} h {_num(res.threshold)}, "
                        f"tuned to {_num(d.get('p0'))} -> {_num(d.get('p1'))} at ARL {_num(d.get('arl'), 6)} "
                        f"(about {_num(d.get('lorden_delay_design'))} pairs to detect)"
                        + (f"; fired at pair {int(d['first_alarm_sample']) + 1}" if fired else "")),
                kind=res.kind, flag=flag, fired=fired, candidate_flagged=k_c, active_flagged=k_a,
                p0=d.get("p0"), p1=d.get("p1"), arl=d.get("arl"), first_alarm_pair=(
                    int(d["first_alarm_sample"]) + 1 if fired and d.get("first_alarm_sample") is not None else None))
            if fired:
                t["outcome"] = "fail"
        out.append(t)
    return out


# ------------------------------------------------------------------ the verdict


@dataclass
class Analysis:
    """What one look at a step's pairs concluded."""

    decision: Literal["pass", "fail", "pending"]
    n: int
    summary: str
    tests: list[dict[str, Any]]
    differing: list[dict[str, Any]]
    judged: bool  # the fixed-n tests ran (n >= min_samples)
    early_abort: bool  # a rollback-capable detector fired
    upto_output_id: int = 0
    skipped: int = 0


def differing_pairs(frames: PairFrames, limit: int = MAX_DIFFERING) -> list[dict[str, Any]]:
    """Up to ``limit`` pairs whose checks differ, harm first (the candidate-only violations
    before the rest), for the officers' UI."""
    names = [k for k in _HARM_FIRST if k in frames.active.flags] + sorted(
        k for k in frames.active.flags if k not in _HARM_FIRST)
    rows = []
    for i in range(frames.n):
        diff = [k for k in names if frames.active.flags[k][i] != frames.candidate.flags[k][i]]
        if not diff:
            continue
        worse = bool(frames.candidate.flags["violation"][i] and not frames.active.flags["violation"][i])
        rows.append((0 if worse else 1, min(names.index(k) for k in diff), i, diff))
    rows.sort()
    act_texts, cand_texts = frames.active.texts, frames.candidate.texts
    return [{"request_id": frames.request_ids[i], "prompt": frames.prompts[i][:MAX_TEXT],
             "active_answer": act_texts[i][:MAX_TEXT], "candidate_answer": cand_texts[i][:MAX_TEXT],
             "checks": diff} for _, _, i, diff in rows[:limit]]


def _summary(decision: str, n: int, min_samples: int, tests: list[dict[str, Any]], judged: bool) -> str:
    by_name = {t["name"]: t for t in tests}
    fired = [t for t in tests if t["name"].startswith("early_abort:") and t.get("fired")]
    failed = [t for t in tests if t["decides"] and t["outcome"] == "fail" and not t["name"].startswith("early_")]
    clauses = []
    lead = failed[0] if failed else by_name.get("policy_violations")
    if judged and lead is not None:  # the fixed-n tests lead the verdict they judged
        clauses.append(_clause(lead, n))
        clauses.extend(_clause(t, n) for t in failed[1:])
    if fired:
        t = fired[0]
        clauses.append(f"early abort: candidate's {t['flag']} flag on {t['candidate_flagged']} of {n} pairs "
                       f"(active {t['active_flagged']}), CUSUM {_num(t['statistic'])} >= h {_num(t['threshold'])} "
                       f"(ARL {_num(t.get('arl'), 6)})")
    if not judged:
        if not fired:
            peaks = [t for t in tests if t["name"].startswith("early_abort:") and t["statistic"] is not None]
            cusum = (f"; no early-abort alarm (CUSUM {_num(peaks[0]['statistic'])} < h {_num(peaks[0]['threshold'])})"
                     if peaks else "")
            clauses.append(f"{n} of {min_samples} pairs so far{cusum}")
        else:
            clauses.append(f"{n} of {min_samples} pairs, the paired tests not judged")
    return "; ".join(clauses) + f": {decision}"


def _clause(t: dict[str, Any], n: int) -> str:
    p = _p(t.get("p_holm", t["p_value"]))
    name = t["name"]
    if name in ("policy_violations", "refusal"):
        what = "violates policy" if name == "policy_violations" else "refuses"
        test = "McNemar" if not t["threshold"] else f"score test (tolerating +{t['threshold']:g})"
        return (f"candidate {what} on {t['b']} of {n} prompts where the active does not ({t['c']} reverse), "
                f"{test} p = {p}")
    if name == "sentiment":
        return f"mean sentiment change {t['statistic']:+.3f} (tolerated -{-t['threshold']:g}), p = {p}"
    if name == "length":
        return f"answers {1 + t['statistic']:.2f}x as long (tolerated +-{t['threshold']:g}), p = {p}"
    return f"mean twin distance {_num(t['statistic'])} (tolerated {t['threshold']:g}), p = {p}"


def analyse(frames: PairFrames, policy: Policy, *, min_samples: int, cache_dir: Path | None = None) -> Analysis:
    """One look at the step's pairs: the early-abort detectors always, the fixed-n tests once n >= min_samples."""
    tests = early_abort_tests(frames, policy, cache_dir=cache_dir)
    early = any(t.get("fired") for t in tests)
    judged = frames.n >= min_samples
    if judged:
        tests = fixed_tests(frames, policy) + tests
    if early or any(t["decides"] and t["outcome"] == "fail" for t in tests):
        decision: Literal["pass", "fail", "pending"] = "fail"
    elif judged:
        decision = "pass"
    else:
        decision = "pending"
    return Analysis(decision, frames.n, _summary(decision, frames.n, min_samples, tests, judged),
                    _finite(tests), differing_pairs(frames), judged, early, frames.upto_output_id, frames.skipped)


# ------------------------------------------------------------------ the worker's unit of work


@dataclass
class RolloutEvaluation:
    """What one evaluation did (the task's return value, and its alerts to send after the commit)."""

    status: Literal["recorded", "unchanged", "dropped", "missing", "not_running"]
    rollout_id: int
    decision: str | None = None
    verdict_id: int | None = None
    n_pairs: int = 0
    summary: str = ""
    change: str | None = None
    notifications: list[Notification] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "rollout_id": self.rollout_id, "decision": self.decision,
                "verdict_id": self.verdict_id, "n_pairs": self.n_pairs, "summary": self.summary,
                "change": self.change, "alerts": [n.alert_id for n in self.notifications]}


def evaluate_rollout(session: Session, *, rollout_id: int, cache_dir: Path | None = None,
                     embedder: Embedder | None = None) -> RolloutEvaluation:
    """Analyse the running rollout's pairs at its current step and record the verdict (idempotent).

    Guard clauses first (no such rollout, no longer running, no new pair since a pending
    look); the analysis reads the pairs
    without a lock, then `record_verdict` locks the deployment and drops the verdict when the
    rollout or its step moved on meanwhile. A failing verdict raises an alert: critical when
    it aborts a canary (users were on the candidate), warning when a shadow fails.
    """
    ro = rollouts.get_rollout(session, rollout_id=rollout_id)
    if ro is None:
        return RolloutEvaluation("missing", rollout_id, summary=f"no rollout {rollout_id}")
    if ro.state != "running":
        return RolloutEvaluation("not_running", rollout_id, summary=f"rollout {rollout_id} is {ro.state}")
    dep = get_deployment_by_id(session, deployment_id=ro.deployment_id)
    assert dep is not None
    policy = deployment_policy(session, deployment=dep)
    step = int(ro.step_index)
    pairs = outputs.rollout_pairs(session, rollout_id=ro.id, since=ro.step_started_at)
    frames = describe_pairs(pairs, candidate_version_id=ro.version_id, fmt=policy.format)
    last = rollouts.latest_verdict(session, rollout_id=ro.id, step_index=step)
    if (frames.n < ro.min_samples and last is not None and last.decision == "pending"
            and (last.n_pairs, last.upto_output_id) == (frames.n, frames.upto_output_id)):
        # no new pair since the last look, which was pending: nothing to add (a quiet
        # rollout does not grow a verdict row per interval)
        return RolloutEvaluation("unchanged", rollout_id, "pending", int(last.id), frames.n, last.summary)
    if embedder is not None or embeddings_wanted(policy):
        add_embeddings(frames, embedder)
    result = analyse(frames, policy, min_samples=int(ro.min_samples), cache_dir=cache_dir)
    evidence = {"mode": ro.mode, "step": step, "weight": float(ro.steps[step]) / 100 if ro.mode == "canary" else 0.0,
                "min_samples": int(ro.min_samples), "judged": result.judged, "early_abort": result.early_abort,
                "skipped_pairs": result.skipped, "alpha": policy.rollout.alpha, "decide": list(policy.rollout.decide)}
    verdict, change = rollouts.record_verdict(
        session, rollout_id=ro.id, principal=principal(), step_index=step, n_pairs=result.n,
        decision=result.decision, summary=result.summary, tests=result.tests, differing=result.differing,
        upto_output_id=result.upto_output_id, evidence=evidence)
    if verdict is None:
        return RolloutEvaluation("dropped", rollout_id, result.decision, None, result.n, result.summary,
                                 "the rollout or its step moved on: verdict dropped")
    out = RolloutEvaluation("recorded", rollout_id, result.decision, int(verdict.id), result.n, result.summary,
                            change.message if change is not None else None)
    if result.decision == "fail":
        note = _alert(session, ro=ro, deployment=dep.name, deployment_id=dep.id, policy=policy,
                      verdict_id=int(verdict.id), result=result, step=step)
        if note is not None:
            out.notifications.append(note)
    return out


def _alert(session: Session, *, ro: Rollout, deployment: str, deployment_id: int, policy: Policy, verdict_id: int,
           result: Analysis, step: int) -> Notification | None:
    canary = ro.mode == "canary"
    what = (f"canary rollout {ro.id} of version {ro.version_id} aborted at step {step}" if canary
            else f"shadow rollout {ro.id} of version {ro.version_id} failed")
    return raise_monitor_alert(
        session, deployment_id=deployment_id, deployment=deployment,
        kind="rollout_aborted" if canary else "rollout_failed", severity="critical" if canary else "warning",
        incident_key=f"rollout:r{ro.id}:fail", message=f"{what} (verdict {verdict_id}): {result.summary}",
        details={"rollout_id": ro.id, "verdict_id": verdict_id, "version_id": ro.version_id,
                 "baseline_version_id": ro.baseline_version_id, "mode": ro.mode, "step": step,
                 "n_pairs": result.n, "early_abort": result.early_abort, "summary": result.summary},
        actor=principal().actor, policy=policy)


# ------------------------------------------------------------------ the dispatcher's view


@dataclass(frozen=True)
class DueRollout:
    rollout_id: int
    key: str  # one enqueue per (rollout, step, last verdict): the dispatcher's de-duplication key
    interval_seconds: int


def due_rollouts(session: Session, now: datetime) -> list[DueRollout]:
    """Running rollouts whose ``rollout.interval_seconds`` has passed since their last verdict
    (or since the start of their step, when that is later, or of the rollout)."""
    due = []
    for ro, name in rollouts.running_rollouts(session):
        try:
            interval = deployment_policy(session, deployment=get_deployment_or_raise(session, name=name)
                                         ).rollout.interval_seconds
        except ValueError:  # a policy this release cannot read: the drift dispatcher logs it
            continue
        last = rollouts.latest_verdict(session, rollout_id=ro.id)
        since = max(t for t in (ro.started_at, ro.step_started_at, last.created_at if last else None)
                    if t is not None)
        if (now - since).total_seconds() >= interval:
            due.append(DueRollout(int(ro.id), f"r{ro.id}:s{ro.step_index}:v{last.id if last else 0}", interval))
    return due
