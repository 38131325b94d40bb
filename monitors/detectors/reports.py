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
  reference's mean embedding in the whitened principal-component space, scaled by
  ``1/n + 1/N`` (a two-sample Hotelling-style statistic; chi-squared with k degrees of
  freedom for Gaussian data, which real embeddings are not, so its threshold is the
  1 - alpha quantile over clean windows simulated by a double bootstrap of the reference:
  a resampled reference and a resampled window each time, so both estimation errors count).
- ``expectations``: the policy's rules over the window (no personal-data patterns,
  length within the format bounds, refusal rate under a bound) through
  :mod:`evaluators.expectations`; any failed expectation is drift.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from monitors.detectors.base import Detector, DetectorContext, DetectorResult, Frame, Reference, Verdict, register

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
                from monitors.evidently_adapter import drift_report

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
    """(T, p-value): T = |mean_cur - mean_ref|^2 / (1/n + 1/N) in whitened space, chi2(k) under no drift."""
    n, big_n, k = cur_proj.shape[0], ref_proj.shape[0], cur_proj.shape[1]
    diff = cur_proj.mean(axis=0) - ref_proj.mean(axis=0)
    t = float(diff @ diff / (1.0 / n + 1.0 / big_n))
    return t, float(stats.chi2.sf(t, k))


_T_CACHE: dict[tuple[str, int, float], float] = {}


def calibrated_t(ref_proj: np.ndarray, n: int, alpha: float, key: str, seed: int = 7) -> float:
    """The 1 - alpha quantile of the embedding statistic on clean windows of size n (double bootstrap)."""
    cached = _T_CACHE.get((key, n, alpha))
    if cached is not None:
        return cached
    rng = np.random.default_rng(seed)
    big_n = ref_proj.shape[0]
    reps = int(max(2000, 50 / alpha))
    ts = np.empty(reps)
    for i in range(reps):
        ref_mean = ref_proj[rng.integers(0, big_n, size=big_n)].mean(axis=0)
        win_mean = ref_proj[rng.integers(0, big_n, size=n)].mean(axis=0)
        diff = win_mean - ref_mean
        ts[i] = diff @ diff / (1.0 / n + 1.0 / big_n)
    t = float(np.quantile(ts, 1.0 - alpha))
    _T_CACHE[(key, n, alpha)] = t
    return t


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
        t, p = embedding_statistic(ref, cur)
        t_crit = calibrated_t(ref, cur.shape[0], alpha, reference.key())
        details: dict[str, Any] = {"alpha": alpha, "components": int(ref.shape[1]), "hotelling_t": t,
                                   "t_threshold": t_crit, "chi2_p_value": p,
                                   "mean_shift_norm": float(np.linalg.norm(cur.mean(axis=0) - ref.mean(axis=0)))}
        evidence: dict[str, str] = {}
        path = _report_path(context, self.name)
        if path is not None:
            try:
                from monitors.evidently_adapter import drift_report

                rep = drift_report(ref_numeric={}, cur_numeric={}, ref_embeddings=ref, cur_embeddings=cur,
                                   html_path=path)
                details["evidently"] = {"values": rep.values, "methods": rep.methods, "seconds": rep.seconds}
                if rep.html_path:
                    evidence["report_html"] = rep.html_path
            except Exception as exc:
                log.warning("Evidently embeddings report for %s failed: %s", context.window_key, exc)
                details["evidently_error"] = str(exc)[:500]
        verdict: Verdict = "drift" if t > t_crit else "ok"
        return self.result(verdict, window, statistic=t, threshold=t_crit, p_values={"embedding_chi2": p},
                           details=details, evidence=evidence)


@register
class Expectations(Detector):
    kind = "expectations"

    def __init__(self, name: str, config: Any, *, policy: Any = None) -> None:
        super().__init__(name, config)
        self.policy = policy

    def specs(self, reference: Reference, window: Frame) -> list[Any]:
        from evaluators.checkers import PII_REGEXES
        from evaluators.expectations import ExpectationSpec

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

        from evaluators.expectations import validate_frame

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
