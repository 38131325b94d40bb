"""Window-by-window detectors: Evidently drift reports and Great Expectations suites.

These judge each window on its own at a per-check false-alarm budget ``alpha`` (the
policy's ``arl`` for them is counted in windows: alpha = 1/arl; 1% by default):

- ``evidently`` (descriptors): a two-sample Kolmogorov-Smirnov test per numeric
  descriptor and Fisher's exact test per 0/1 flag, Bonferroni-corrected across columns.
  Both are size-aware (a 50-output window needs a larger difference than a 500-output
  one), unlike Evidently's default fixed-threshold distances. The p-values are computed
  here with scipy, the same tests Evidently's ``ks`` and ``fisher_exact`` run, so the
  decision does not depend on whether the HTML report is rendered; the report (Evidently,
  via :mod:`monitors.evidently_adapter`) is saved as evidence.
- ``evidently_embeddings``: the squared distance between the window's and the
  reference's mean embedding in the reference's principal components, each scaled by
  its spread over reference and window together, times ``1/(1/n + 1/N)`` (a two-sample
  Hotelling-style statistic). Its p-value is a two-sample permutation test: the window's
  rows and the reference's are relabelled at random and the statistic recomputed. The
  reference rows and new clean outputs are exchangeable (the components come from the
  other half of the reference, :func:`monitors.reference.whiten`), so the test has level
  alpha exactly, averaged over references, whatever the embeddings' shape: the null
  accounts for the reference being a sample too. (The chi-squared p-value, which would
  need Gaussian rows, is recorded for comparison only. A double bootstrap of the
  reference, which this replaced, took the reference's rows for the population: its
  level was an approximation, 1.1-1.2 % per check for a 1 % budget in
  bench/bench_monitors.py, within noise of this test's there; see docs/benchmarks.md.)
- ``expectations``: the policy's rules over the window (no personal-data patterns,
  length within the format bounds, refusal rate under a bound) through
  :mod:`evaluators.expectations`; any failed expectation is drift.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from evaluators.checkers import PII_REGEXES
from evaluators.expectations import ExpectationSpec, validate_frame
from monitors.detectors.base import Detector, DetectorContext, DetectorResult, Frame, Reference, Verdict, register
from monitors.evidently_adapter import drift_report

log = logging.getLogger(__name__)
DEFAULT_ALPHA = 0.01
MIN_REFERENCE = 20


def alpha_of(config: Any) -> float:
    arl = getattr(config, "arl", None)
    return 1.0 / float(arl) if arl else DEFAULT_ALPHA


def descriptor_pvalues(reference: Frame, window: Frame) -> dict[str, float]:
    """Per-column p-values: KS for numeric descriptors, Fisher's exact test for flags."""
    out: dict[str, float] = {}
    for name, ref in reference.numeric.items():
        cur = window.numeric.get(name)
        if cur is None or len(cur) == 0 or len(ref) == 0:
            continue
        out[name] = float(stats.ks_2samp(np.asarray(ref, float), np.asarray(cur, float)).pvalue)
    for name, ref in reference.flags.items():
        cur = window.flags.get(name)
        if cur is None or len(cur) == 0 or len(ref) == 0:
            continue
        a, b = int(np.sum(cur)), int(np.sum(ref))
        table = [[a, len(cur) - a], [b, len(ref) - b]]
        out[name] = float(stats.fisher_exact(table).pvalue) if (a + b) > 0 and (a + b) < len(cur) + len(ref) else 1.0
    return out


def _report_path(context: DetectorContext, name: str) -> Path | None:
    if not context.write_report or context.report_dir is None:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{context.window_key}-{name}")
    return context.report_dir / f"{safe}.html"


@register
class EvidentlyDescriptors(Detector):
    kind = "evidently"

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        if reference.n < MIN_REFERENCE or window.n == 0:
            return self.result("inconclusive", window, details={"reason": "reference or window too small"})
        alpha = alpha_of(self.config)
        pvals = descriptor_pvalues(reference.frame, window)
        if not pvals:
            return self.result("inconclusive", window, details={"reason": "no descriptors in common"})
        threshold = alpha / len(pvals)  # Bonferroni: the family's false-alarm rate stays <= alpha
        worst = min(pvals, key=lambda k: pvals[k])
        evidence: dict[str, str] = {}
        details: dict[str, Any] = {"alpha": alpha, "tests": {**{k: "ks" for k in reference.frame.numeric},
                                                             **{k: "fisher_exact" for k in reference.frame.flags}},
                                   "worst_column": worst}
        path = _report_path(context, self.name)
        if path is not None:
            try:
                rep = drift_report(
                    ref_numeric=reference.frame.numeric, cur_numeric=window.numeric,
                    ref_flags=reference.frame.flags, cur_flags=window.flags,
                    ref_texts=reference.frame.texts or None, cur_texts=window.texts or None, html_path=path,
                )
                details["evidently"] = {"values": rep.values, "methods": rep.methods, "seconds": rep.seconds,
                                        "errors": rep.errors}
                if rep.html_path:
                    evidence["report_html"] = rep.html_path
            except Exception as exc:  # the report is evidence; a failure must not hide the verdict
                log.warning("Evidently report for %s failed: %s", context.window_key, exc)
                details["evidently_error"] = str(exc)[:500]
        verdict: Verdict = "drift" if pvals[worst] <= threshold else "ok"
        return self.result(verdict, window, statistic=pvals[worst], threshold=threshold, p_values=pvals,
                           details=details, evidence=evidence)


def embedding_statistic(ref_proj: np.ndarray, cur_proj: np.ndarray) -> tuple[float, float]:
    """(T, p-value): T = |mean_cur - mean_ref|^2 / (1/n + 1/N) in whitened space, chi2(k) under no drift
    for Gaussian rows of unit variance (a reference only: the decision is the permutation test's)."""
    n, big_n, k = cur_proj.shape[0], ref_proj.shape[0], cur_proj.shape[1]
    diff = cur_proj.mean(axis=0) - ref_proj.mean(axis=0)
    t = float(diff @ diff / (1.0 / n + 1.0 / big_n))
    return t, float(stats.chi2.sf(t, k))


def permutations_for(alpha: float) -> int:
    """Relabellings for a Monte Carlo permutation p-value at level ``alpha``: B + 1 a multiple of
    1/alpha, with 10 relabellings beyond the critical value. The level is exact for any B; a
    small B only blurs the critical value, which costs a little power, never false alarms."""
    return int(max(999, math.ceil(10.0 / alpha) - 1))


def relabelling_seed(ref: np.ndarray, cur: np.ndarray) -> int:
    """A seed for the random splits that depends on the pooled rows as a set, not on which
    of them are the window's.

    The Monte Carlo permutation p-value is exact when the random splits are drawn
    independently of the observed split given the pooled rows. A seed hashed from the
    window's rows alone (as before) makes the splits a function of the observed split; a
    hash of the sorted pooled rows (and the window size) is the same for every split of
    the same rows, so the splits stay independent of the labelling and the verdict stays
    reproducible across workers.
    """
    pooled = np.round(np.vstack([cur, ref]), 6)
    ordered = pooled[np.lexsort(pooled.T[::-1])]
    h = hashlib.sha256(np.int64(cur.shape[0]).tobytes() + ordered.tobytes())
    return int.from_bytes(h.digest()[:8], "little")


@dataclass(frozen=True)
class PermutationTest:
    statistic: float  # T of the observed labelling
    p_value: float  # (1 + #{T* >= T}) / (B + 1)
    critical: float  # drift iff statistic > critical (equivalent to p_value <= alpha)
    permutations: int


def embedding_permutation_test(ref_proj: np.ndarray, cur_proj: np.ndarray, *, alpha: float,
                               permutations: int | None = None, seed: int | None = None) -> PermutationTest:
    """Two-sample permutation test of equal mean embeddings, reference (N, k) against window (n, k).

    T = sum_j (mean_cur_j - mean_ref_j)^2 / v_j / (1/n + 1/N), v_j the variance of component j
    over both samples together: a function of the pooled rows that relabelling leaves
    alone, so only the split changes. Under no drift the N + n rows are exchangeable and
    every split is equally likely; the p-value (1 + #{T* >= T}) / (B + 1) over B random
    splits is then at most alpha with probability at most alpha (Monte Carlo permutation
    test), for any distribution of the rows and any reference size. The splits are drawn
    from a seed derived from the pooled rows unless given (`relabelling_seed`), so every
    worker reaches the same verdict on the same window.
    """
    ref = np.atleast_2d(np.asarray(ref_proj, dtype=float))
    cur = np.atleast_2d(np.asarray(cur_proj, dtype=float))
    n, big_n = cur.shape[0], ref.shape[0]
    b = permutations or permutations_for(alpha)
    pooled = np.vstack([cur, ref])
    pooled = pooled - pooled.mean(axis=0)
    sd = pooled.std(axis=0, ddof=1)
    z = pooled / np.where(sd > 1e-12, sd, 1.0)  # (N + n, k), mean 0
    # with the pooled mean at 0: mean_cur - mean_ref = sum_cur * (1/n + 1/N)
    scale = 1.0 / n + 1.0 / big_n
    t_obs = float(np.sum(z[:n].sum(axis=0) ** 2) * scale)
    if seed is None:
        seed = relabelling_seed(ref, cur)
    rng = np.random.default_rng(seed)
    t_perm = np.empty(b)
    chunk = 500
    for lo in range(0, b, chunk):
        m = min(chunk, b - lo)
        picks = np.argpartition(rng.random((m, big_n + n)), n - 1, axis=1)[:, :n]  # (m, n): a random split
        t_perm[lo:lo + m] = np.sum(z[picks].sum(axis=1) ** 2, axis=1) * scale
    p = (1.0 + float(np.sum(t_perm >= t_obs))) / (b + 1.0)
    # p <= alpha  <=>  fewer than floor(alpha (B + 1)) of the T* reach T  <=>  T above that order statistic
    rank = math.floor(alpha * (b + 1) + 1e-9)
    critical = float(np.sort(t_perm)[::-1][rank - 1]) if rank >= 1 else math.inf
    return PermutationTest(t_obs, p, critical, b)


@register
class EvidentlyEmbeddings(Detector):
    kind = "evidently_embeddings"

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        ref = reference.frame.embeddings
        cur = reference.project(window.embeddings)
        if ref is None or cur is None or reference.n < MIN_REFERENCE or window.n < 2:
            return self.result("inconclusive", window, details={"reason": "no embeddings or too few"})
        alpha = alpha_of(self.config)
        test = embedding_permutation_test(ref, cur, alpha=alpha)
        _, chi2_p = embedding_statistic(ref, cur)
        details: dict[str, Any] = {"alpha": alpha, "components": int(ref.shape[1]), "test": "permutation",
                                   "hotelling_t": test.statistic, "t_threshold": test.critical,
                                   "permutations": test.permutations, "chi2_p_value": chi2_p,
                                   "mean_shift_norm": float(np.linalg.norm(cur.mean(axis=0) - ref.mean(axis=0)))}
        evidence: dict[str, str] = {}
        path = _report_path(context, self.name)
        if path is not None:
            try:
                rep = drift_report(ref_numeric={}, cur_numeric={}, ref_embeddings=ref, cur_embeddings=cur,
                                   html_path=path)
                details["evidently"] = {"values": rep.values, "methods": rep.methods, "seconds": rep.seconds}
                if rep.html_path:
                    evidence["report_html"] = rep.html_path
            except Exception as exc:
                log.warning("Evidently embeddings report for %s failed: %s", context.window_key, exc)
                details["evidently_error"] = str(exc)[:500]
        # a p-value against alpha, like the descriptor test (the dashboard plots it so)
        verdict: Verdict = "drift" if test.p_value <= alpha else "ok"
        return self.result(verdict, window, statistic=test.p_value, threshold=alpha,
                           p_values={"embedding_permutation": test.p_value, "embedding_chi2": chi2_p},
                           details=details, evidence=evidence)


@register
class Expectations(Detector):
    kind = "expectations"

    def __init__(self, name: str, config: Any, *, policy: Any = None) -> None:
        super().__init__(name, config)
        self.policy = policy

    def specs(self, reference: Reference, window: Frame) -> list[Any]:
        specs = [ExpectationSpec(f"no {kind} in outputs", "not_match_regex", "output", regex=regex)
                 for kind, regex in PII_REGEXES.items()]
        fmt = getattr(self.policy, "format", None)
        if fmt is not None:
            specs.append(ExpectationSpec("output length within format bounds", "length_between", "output",
                                         min_value=float(fmt.min_chars),
                                         max_value=None if fmt.max_chars is None else float(fmt.max_chars)))
        ref = reference.frame.flags.get("refusal")
        if ref is not None and len(ref) and "refusal" in window.flags:
            # the refusal rate may not leave the reference's binomial range at the check's alpha
            p = max(float(np.mean(ref)), 1.0 / (len(ref) + 1))
            hi = float(stats.binom.ppf(1.0 - alpha_of(self.config), window.n, p)) / max(window.n, 1)
            specs.append(ExpectationSpec(f"refusal rate <= {hi:.3f}", "mean_between", "refusal",
                                         min_value=0.0, max_value=hi))
        return specs

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        import pandas as pd

        if window.n == 0 or not window.texts:
            return self.result("inconclusive", window, details={"reason": "no outputs"})
        frame = pd.DataFrame({"output": window.texts,
                              **{k: np.asarray(v, dtype=float) for k, v in window.flags.items()}})
        report = validate_frame(frame, self.specs(reference, window))
        failed = report.failed()
        outcomes = [{"name": o.name, "success": o.success, "observed": o.observed,
                     "unexpected_count": o.unexpected_count,
                     "unexpected_output_ids": [window.output_ids[i] for i in o.unexpected_rows
                                               if i < len(window.output_ids)]} for o in report.outcomes]
        return self.result("drift" if failed else "ok", window, statistic=float(len(failed)), threshold=1.0,
                           details={"expectations": outcomes})
