"""Sequential detectors: CUSUMs whose thresholds are calibrated to the policy's ARL.

- ``cusum_bernoulli``: per-output 0/1 flag (default ``violation``: any policy checker
  fired) from the reference rate p0 to the design rate p1.
- ``cusum_gaussian``: two-sided CUSUMs on the standardised means of the numeric
  descriptors (log scale for lengths), one threshold for all of them, calibrated
  jointly on bootstrap resamples of the reference rows (their real shape and
  correlations, not a Gaussian idealisation).
- ``cusum_embeddings``: Crosier's multivariate CUSUM on the whitened principal components
  of the sentence embeddings: a topic change in any direction.

The ARL is in samples (outputs), as in STATISTICS.md. The statistic carries across
windows in the returned ``state``; it restarts at zero after an alarm, so a persisting
change drifts window after window while a lone false alarm does not linger.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monitors.detectors import cusum
from monitors.detectors.base import Detector, DetectorContext, DetectorResult, Frame, Reference, register

DEFAULT_ARL = 10_000.0
# Lengths are right-skewed; on a log scale a mean shift is closer to a location shift.
LOG_COLUMNS = frozenset({"length", "word_count"})
# A design shift of 0.75 sd loses little against both 0.5 and 1 sd shifts (drift per
# sample d(D - d/2) against the optimum D^2/2); 1 sd tunes for gross changes only.
DEFAULT_SHIFT_SIGMAS = 0.75
DEFAULT_EMBEDDING_SHIFT = 0.5
MIN_REFERENCE = 20


def _continue(state: dict[str, Any] | None, params: dict[str, Any], width: int) -> dict[str, Any]:
    """The stored state if it was made with the same parameters, else a fresh start."""
    if state and all(state.get(k) == v for k, v in params.items()) and len(state.get("s") or []) == width:
        return state
    return {**params, "s": [0.0] * width}


def _too_small(det: Detector, reference: Reference, window: Frame) -> DetectorResult | None:
    if reference.n < MIN_REFERENCE:
        return det.result("inconclusive", window, details={"reason": f"reference has {reference.n} outputs"})
    if window.n == 0:
        return det.result("inconclusive", window, details={"reason": "empty window"})
    return None


def _sequential_result(det: Detector, window: Frame, *, stats: np.ndarray, peak: float, alarms: int,
                       first: int | None, h: float, state: dict[str, Any], details: dict[str, Any]) -> DetectorResult:
    total_alarms = int(state.get("alarms_total", 0)) + alarms
    samples = int(state.get("samples_total", 0)) + window.n
    new_state = {**state, "s": [float(v) for v in np.atleast_1d(stats)], "alarms_total": total_alarms,
                 "samples_total": samples}
    details = {**details, "alarms": alarms, "first_alarm_sample": first, "samples_total": samples,
               "statistic_end": float(np.max(np.abs(np.atleast_1d(stats)), initial=0.0))}
    return det.result("drift" if alarms else "ok", window, statistic=peak, threshold=h, details=details,
                      state=new_state)


@register
class BernoulliCusum(Detector):
    kind = "cusum_bernoulli"

    def __init__(self, name: str, config: Any, *, flag: str = "violation") -> None:
        super().__init__(name, config)
        self.flag = flag

    def params(self, reference: Reference, context: DetectorContext) -> dict[str, Any]:
        ref = np.asarray(reference.frame.flags.get(self.flag, []), dtype=float)
        k, n = int(ref.sum()), len(ref)
        p0 = cusum.estimate_p0(k, n)
        p1 = cusum.design_p1(p0, getattr(self.config, "p1", None))
        explicit = getattr(self.config, "threshold", None)
        arl = self.arl or DEFAULT_ARL
        h = float(explicit) if explicit else cusum.calibrate_cusum(
            cusum.bernoulli_sampler(p0, p1, reference_k=k, reference_n=n), arl,
            key=f"bern|{p0:.6g}|{p1:.6g}|{k}/{n}", cache_dir=context.cache_dir)
        return {"flag": self.flag, "p0": p0, "p1": p1, "h": h, "arl": arl}

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        if (small := _too_small(self, reference, window)) is not None:
            return small
        if self.flag not in window.flags:
            return self.result("inconclusive", window, details={"reason": f"window has no {self.flag!r} flag"})
        p = self.params(reference, context)
        state = _continue(state, p, 1)
        x = np.asarray(window.flags[self.flag], dtype=float)
        llr = cusum.bernoulli_llr(x, p["p0"], p["p1"]).reshape(-1, 1)
        run = cusum.cusum_block(llr, np.asarray(state["s"]), p["h"])
        rate = float(x.mean())
        return _sequential_result(
            self, window, stats=run.stats, peak=run.peak, alarms=run.alarms, first=run.first_alarm, h=p["h"],
            state=state, details={**p, "window_rate": rate, "violations": int(x.sum()),
                                  "kl_design": cusum.bernoulli_kl(p["p1"], p["p0"]),
                                  "lorden_delay_design": cusum.lorden_delay(p["arl"],
                                                                            cusum.bernoulli_kl(p["p1"], p["p0"]))},
        )


def _standardise(reference: Reference, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ref = np.column_stack([_transform(c, reference.frame.numeric[c]) for c in columns])
    mu = ref.mean(axis=0)
    sd = ref.std(axis=0, ddof=1)
    sd = np.where(sd > 1e-9, sd, 1.0)  # a constant column cannot drift in mean by "sd"s
    return mu, sd


def _transform(column: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.log1p(np.maximum(v, 0.0)) if column in LOG_COLUMNS else v


def two_sided_llr(z: np.ndarray, d: float) -> np.ndarray:
    """Standardised rows (n, K) -> (n, 2K) increments: upward then downward shifts of d sd."""
    return np.concatenate([d * (z - d / 2.0), -d * (z + d / 2.0)], axis=1)


@register
class GaussianCusum(Detector):
    kind = "cusum_gaussian"

    def __init__(self, name: str, config: Any, *, columns: list[str] | None = None) -> None:
        super().__init__(name, config)
        self.columns = columns

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        if (small := _too_small(self, reference, window)) is not None:
            return small
        columns = [c for c in (self.columns or sorted(reference.frame.numeric)) if c in window.numeric]
        if not columns:
            return self.result("inconclusive", window, details={"reason": "no numeric descriptors to watch"})
        d = float(getattr(self.config, "shift_sigmas", None) or DEFAULT_SHIFT_SIGMAS)
        arl = self.arl or DEFAULT_ARL
        mu, sd = _standardise(reference, columns)
        ref_z = (np.column_stack([_transform(c, reference.frame.numeric[c]) for c in columns]) - mu) / sd
        explicit = getattr(self.config, "threshold", None)
        h = float(explicit) if explicit else cusum.calibrate_cusum(
            cusum.bootstrap_sampler(ref_z, to_llr=lambda z: two_sided_llr(z, d), reference_uncertainty=True), arl,
            key=f"gauss3|{reference.key()}|{','.join(columns)}|{d}", cache_dir=context.cache_dir)
        params = {"columns": columns, "shift_sigmas": d, "h": h, "arl": arl, "calibration": "bootstrap+reference"}
        state = _continue(state, params, 2 * len(columns))
        z = (np.column_stack([_transform(c, window.numeric[c]) for c in columns]) - mu) / sd
        run = cusum.cusum_block(two_sided_llr(z, d), np.asarray(state["s"]), h)
        shift = {c: float(v) for c, v in zip(columns, z.mean(axis=0), strict=True)}
        return _sequential_result(
            self, window, stats=run.stats, peak=run.peak, alarms=run.alarms, first=run.first_alarm, h=h,
            state=state, details={**params, "mean_shift_sd": shift,
                                  "lorden_delay_design": cusum.lorden_delay(arl, d * d / 2.0)},
        )


@register
class EmbeddingCusum(Detector):
    kind = "cusum_embeddings"

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        if (small := _too_small(self, reference, window)) is not None:
            return small
        ref = reference.frame.embeddings
        cur = reference.project(window.embeddings)
        if ref is None or cur is None:
            return self.result("inconclusive", window, details={"reason": "no embeddings"})
        shift = float(getattr(self.config, "shift_sigmas", None) or DEFAULT_EMBEDDING_SHIFT)
        k = shift / 2.0
        arl = self.arl or DEFAULT_ARL
        explicit = getattr(self.config, "threshold", None)
        h = float(explicit) if explicit else cusum.calibrate_mcusum(
            cusum.bootstrap_sampler(ref, reference_uncertainty=True), k, arl, key=f"emb3|{reference.key()}",
            cache_dir=context.cache_dir)
        params = {"components": int(ref.shape[1]), "shift_norm": shift, "h": h, "arl": arl}
        state = _continue(state, params, int(ref.shape[1]))
        s, peak, alarms, first = cusum.mcusum_block(cur, np.asarray(state["s"]), k, h)
        mean_shift = float(np.linalg.norm(cur.mean(axis=0)))
        return _sequential_result(
            self, window, stats=s, peak=peak, alarms=alarms, first=first, h=h, state=state,
            details={**params, "window_mean_shift_norm": mean_shift,
                     "lorden_delay_design": cusum.lorden_delay(arl, shift * shift / 2.0)},
        )


def resolve_kind(name: str, policy_kind: str, flags: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Map a policy entry (its name and ``kind``) to a registered detector kind and options.

    ``kind: cusum`` watches what its name says: a name with "embedding" -> the embeddings;
    "violation" or the name of a flag -> that Bernoulli flag; anything else -> the
    descriptor means. The other policy kinds name registered detectors directly.
    """
    if policy_kind != "cusum":
        return policy_kind, {}
    lowered = name.lower()
    if "embedding" in lowered:
        return "cusum_embeddings", {}
    if "violation" in lowered:
        return "cusum_bernoulli", {"flag": "violation"}
    for flag in flags or []:
        if flag in lowered:
            return "cusum_bernoulli", {"flag": flag}
    return "cusum_gaussian", {}


def shift_for_delay(arl: float, target_delay: float) -> float:
    """The Gaussian shift (in sd) that the Lorden bound detects in ``target_delay`` samples."""
    return math.sqrt(2.0 * math.log(arl) / target_delay)
