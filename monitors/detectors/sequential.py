"""Sequential detectors: CUSUMs whose thresholds are calibrated to the policy's ARL.

- ``cusum_bernoulli``: per-output 0/1 flag (default ``violation``: any policy checker
  fired) from the reference rate p0 to the design rate p1. p0 is an estimate from the
  reference's counts, so h is calibrated with each simulated stream's true rate drawn
  from what those counts allow (:func:`cusum.reference_rate_beta`): the ARL holds
  averaged over references, as the budget promises.
- ``cusum_gaussian``: two-sided CUSUMs on the standardised means of the numeric
  descriptors (log scale for lengths), one threshold for all of them, calibrated
  jointly on bootstrap resamples of the reference rows (their real shape and
  correlations, not a Gaussian idealisation).
- ``cusum_embeddings``: a Bernoulli CUSUM on a per-output "novel" flag: the output's
  Hotelling T^2 in the reference's principal components, or its residual energy outside
  them (SPE), above the reference's own out-of-sample quantile. A topic change shows as
  a rise in the share of novel outputs, whichever direction it goes.

The ARL is in samples (outputs), as in STATISTICS.md. The statistic carries across
windows in the returned ``state``; it restarts at zero after an alarm, so a persisting
change drifts window after window while a lone false alarm does not linger.
"""

from __future__ import annotations

from dataclasses import dataclass
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
            key=f"bern-ucd|{p0:.6g}|{p1:.6g}|{k}/{n}", cache_dir=context.cache_dir)
        # "calibration" names how h was set: a state kept under another scheme restarts
        return {"flag": self.flag, "p0": p0, "p1": p1, "h": h, "arl": arl,
                "calibration": "explicit" if explicit else "upper-confidence"}

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


# Share of clean outputs flagged "novel" (the reference's upper 5% of novelty scores).
# Wide enough that a partial shift (a topic that overlaps the reference's) still raises
# the flag rate, and that the 500 held-out reference rows hold ~25 flagged ones, so the
# clean rate is known to +-20% (a 1% flag leaves ~5 and needs a much higher h).
NOVELTY_ALPHA = 0.05
NOVELTY_P1_MULTIPLE = 5.0


@dataclass(frozen=True)
class Novelty:
    """The embedding detector's per-output "novel" flag: the novelty score above ``threshold``.

    The score (:func:`monitors.detectors.base.novelty_score`, fitted by
    :func:`monitors.reference.novelty_model`) is the larger of Hotelling's T^2 in the
    reference's principal components and the squared prediction error outside them (SPE),
    each on its own scale -- the standard PCA process-monitoring pair. The threshold is the
    (1 - alpha) order statistic of the held-out reference rows' scores, rows the score's
    fit never saw, so a clean new output is exchangeable with them: with ``flagged`` of
    ``rows`` above it, its flag rate follows Beta(flagged + 1, rows - flagged), mean
    (flagged + 1) / (rows + 1) (split-conformal). SPE sees what a mean shift in the
    components cannot: a new topic moves little inside 10 components of the old topics but
    lands far outside them.

    ``score_name`` "t2" is the fallback for references built before the model was stored:
    T^2 in the whitened components only, its threshold from the same rows that set the
    whitening (slightly optimistic), blind to topics outside the components.
    """

    score_name: str  # "t2+spe" or "t2"
    threshold: float
    flagged: int
    rows: int

    @property
    def p0(self) -> float:
        return (self.flagged + 1.0) / (self.rows + 1.0)

    @property
    def rate_beta(self) -> tuple[float, float]:
        return self.flagged + 1.0, float(max(self.rows - self.flagged, 1))

    def scores(self, reference: Reference, embeddings: np.ndarray) -> np.ndarray:
        if self.score_name == "t2":
            proj = reference.project(embeddings)
            if proj is None:
                raise ValueError("the reference has no embedding components")
            return np.asarray((proj * proj).sum(axis=1))
        score = reference.novelty(embeddings)
        if score is None:
            raise ValueError("the reference has no embedding novelty model")
        return score

    def flags(self, reference: Reference, embeddings: np.ndarray) -> np.ndarray:
        """0/1 per output: novel against the reference."""
        return (self.scores(reference, embeddings) > self.threshold).astype(np.int8)


def fit_novelty(reference: Reference, alpha: float = NOVELTY_ALPHA) -> tuple[Novelty | None, str | None]:
    """(the reference's novelty flag, a note on a fallback) or (None, why there is none)."""
    if reference.frame.embeddings is None or reference.emb_mean is None or reference.emb_components is None:
        return None, "the reference has no embeddings"
    note = None
    model = reference.emb_novelty
    if model and model.get("scores"):
        name, scores = "t2+spe", np.asarray(model["scores"], dtype=float)
    else:
        proj = np.asarray(reference.frame.embeddings, dtype=float)
        name, scores = "t2", (proj * proj).sum(axis=1)
        note = ("T^2 only: this reference predates the stored novelty model, so a topic outside its principal "
                "components goes unseen and the threshold is slightly optimistic; references built from now on "
                "carry the model")
    threshold = float(np.quantile(scores, 1.0 - alpha, method="higher"))
    return Novelty(name, threshold, int((scores > threshold).sum()), len(scores)), note


@register
class EmbeddingCusum(Detector):
    """A topic change in the embeddings: a Bernoulli CUSUM on the per-output novelty flag.

    The flag (:class:`Novelty`) turns each 384-dimensional embedding into one bit whose
    clean rate p0 the reference gives out of sample; the CUSUM is tuned to the policy's
    ``p1`` (the share of novel outputs to catch fast), else 5 x p0, and its threshold is
    calibrated to the ARL with each simulated stream's true clean rate drawn from the
    exact Beta law of p0, so the budget holds despite p0 being an estimate.

    Why a flag, not the mean: the multivariate CUSUM on the components' mean that this
    replaced (Crosier's) was over its false-alarm budget in bench/bench_monitors.py and
    slow, since a new topic moves the mean inside the old topics' components little.
    What the flag does not target: a change of mix among the reference's own topics
    (outputs still typical, their average moving within the components) raises the flag
    rate only a little; the per-window Hotelling test (``evidently_embeddings``) watches
    the mean.
    """

    kind = "cusum_embeddings"

    def run(self, *, reference: Reference, window: Frame, state: dict[str, Any] | None,
            context: DetectorContext) -> DetectorResult:
        if (small := _too_small(self, reference, window)) is not None:
            return small
        cur = reference.project(window.embeddings)
        if reference.frame.embeddings is None or cur is None or window.embeddings is None:
            return self.result("inconclusive", window, details={"reason": "no embeddings"})
        model, note = fit_novelty(reference)
        if model is None:
            return self.result("inconclusive", window, details={"reason": note})
        p0 = model.p0
        p1 = cusum.design_p1(p0, getattr(self.config, "p1", None), multiple=NOVELTY_P1_MULTIPLE)
        arl = self.arl or DEFAULT_ARL
        explicit = getattr(self.config, "threshold", None)
        h = float(explicit) if explicit else cusum.calibrate_cusum(
            cusum.bernoulli_sampler(p0, p1, rate_beta=model.rate_beta), arl,
            key=f"novel2|{p0:.6g}|{p1:.6g}|{model.flagged}/{model.rows}", cache_dir=context.cache_dir)
        params = {"score": model.score_name, "p0": p0, "p1": p1, "h": h, "arl": arl}
        state = _continue(state, params, 1)
        x = model.flags(reference, window.embeddings)
        run = cusum.cusum_block(cusum.bernoulli_llr(x, p0, p1).reshape(-1, 1), np.asarray(state["s"]), h)
        kl = cusum.bernoulli_kl(p1, p0)
        details: dict[str, Any] = {
            **params, "novelty_alpha": NOVELTY_ALPHA, "reference_flagged": f"{model.flagged}/{model.rows}",
            "window_rate": float(x.mean()), "novel": int(x.sum()),
            "window_mean_shift_norm": float(np.linalg.norm(cur.mean(axis=0))),
            "kl_design": kl, "lorden_delay_design": cusum.lorden_delay(arl, kl)}
        if note:
            details["note"] = note
        return _sequential_result(self, window, stats=run.stats, peak=run.peak, alarms=run.alarms,
                                  first=run.first_alarm, h=h, state=state, details=details)


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

