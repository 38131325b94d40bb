"""CUSUM statistics (STATISTICS.md): Bernoulli and Gaussian log-likelihood-ratio increments,
a vectorised multi-statistic CUSUM, and the calibration of the alarm threshold ``h`` by
simulation to a stated average run length (ARL) between false alarms.

Everything here is plain numpy and deterministic (a fixed seed per calibration), so the
same reference gives the same threshold in every worker; calibrations are cached in
memory and, when a folder is given, on disk as small JSON files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# p0 estimated as 0 would make every violation an infinite log-likelihood ratio.
P0_FLOOR = 1e-3


def bernoulli_llr(x: np.ndarray, p0: float, p1: float) -> np.ndarray:
    """Per-sample log-likelihood ratio of rate p1 against p0 for 0/1 flags."""
    _check_rates(p0, p1)
    x = np.asarray(x, dtype=float)
    return x * math.log(p1 / p0) + (1.0 - x) * math.log((1.0 - p1) / (1.0 - p0))


def gaussian_llr(x: np.ndarray, mu0: float, mu1: float, sigma: float) -> np.ndarray:
    """Per-sample log-likelihood ratio of mean mu1 against mu0 (known sigma)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (got {sigma})")
    x = np.asarray(x, dtype=float)
    return (mu1 - mu0) / sigma**2 * (x - (mu0 + mu1) / 2.0)


def bernoulli_kl(p1: float, p0: float) -> float:
    """KL(p1 || p0) in nats: the expected llr per sample after the change."""
    _check_rates(p0, p1)
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def lorden_delay(arl: float, kl: float) -> float:
    """The least expected detection delay (samples) any procedure with this ARL can reach."""
    if kl <= 0:
        return math.inf
    return math.log(arl) / kl


def estimate_p0(violations: int, n: int, floor: float = P0_FLOOR) -> float:
    """The reference violation rate, kept above zero (a half count added, then the floor)."""
    if n <= 0:
        raise ValueError("cannot estimate p0 from an empty reference")
    if not 0 <= violations <= n:
        raise ValueError(f"violations ({violations}) must be between 0 and n ({n})")
    return min(max((violations + 0.5) / (n + 1.0), floor), 0.5)


def design_p1(p0: float, policy_p1: float | None, multiple: float = 5.0) -> float:
    """The rate the detector is tuned to: the policy's p1 when above p0, else a multiple of p0."""
    if policy_p1 is not None and policy_p1 > p0 * 1.2:
        return float(policy_p1)
    return float(min(max(p0 * multiple, p0 + 0.01), 0.9))


def _check_rates(p0: float, p1: float) -> None:
    if not (0 < p0 < 1 and 0 < p1 < 1):
        raise ValueError(f"rates must be strictly between 0 and 1 (p0={p0}, p1={p1})")


@dataclass
class CusumRun:
    """What feeding a block of samples did: final statistics, the largest value seen, alarms."""

    stats: np.ndarray  # (K,) statistic after the block
    peak: float  # max over samples and statistics within the block
    alarms: int  # alarms raised (the statistic restarts at 0 after each)
    first_alarm: int | None  # 0-based sample index of the first alarm in the block


def cusum_block(llr: np.ndarray, start: np.ndarray, h: float) -> CusumRun:
    """Run K parallel CUSUMs over a block of per-sample increments ``llr`` of shape (n, K).

    The statistics restart at zero after an alarm, so a persisting change alarms again
    (consecutive drifting windows confirm it) while a lone false alarm does not linger.
    """
    llr = np.atleast_2d(np.asarray(llr, dtype=float))
    s = np.array(start, dtype=float).reshape(-1).copy()
    if llr.shape[1] != s.shape[0]:
        raise ValueError(f"llr has {llr.shape[1]} columns but the state has {s.shape[0]} statistics")
    peak, alarms, first = float(s.max(initial=0.0)), 0, None
    for t in range(llr.shape[0]):
        s = np.maximum(0.0, s + llr[t])
        top = float(s.max())
        peak = max(peak, top)
        if top >= h:
            alarms += 1
            first = t if first is None else first
            s[:] = 0.0
    return CusumRun(s, peak, alarms, first)


# ------------------------------------------------------------------ calibration

_CACHE: dict[str, float] = {}

class Sampler:
    """Simulated clean streams for calibration: ``start`` draws what is fixed per stream
    (e.g. the true rate behind an estimated p0), ``draw`` the next ``n`` samples of every
    stream, shape (n, streams, K)."""

    def start(self, rng: np.random.Generator, streams: int) -> None:
        self.streams = streams

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def alarm_rate_cusum(sampler: Sampler, h: float, *, streams: int, length: int, seed: int) -> float:
    """False alarms per sample of K restarting CUSUMs (alarm on any) on simulated clean data."""
    rng = np.random.default_rng(seed)
    sampler.start(rng, streams)
    s: np.ndarray | None = None
    alarms, done, chunk = 0, 0, 2048
    while done < length:
        n = min(chunk, length - done)
        inc = sampler.draw(rng, n)  # (n, streams, K)
        if s is None:
            s = np.zeros(inc.shape[1:])
        for t in range(n):
            s = np.maximum(0.0, s + inc[t])
            hit = s.max(axis=1) >= h
            if hit.any():
                alarms += int(hit.sum())
                s[hit] = 0.0
        done += n
    return alarms / float(streams * length)


def calibrate_threshold(
    rate: Callable[[float, int, int, int], float],
    arl: float,
    *,
    key: str,
    cache_dir: Path | None = None,
    seed: int = 20240601,
    budget_samples: int = 4_000_000,
) -> float:
    """The threshold h whose false-alarm rate on simulated clean data is at most 1/arl.

    ``rate(h, streams, length, seed)`` simulates clean data and returns alarms per sample.
    By renewal, a restarting detector alarms 1/ARL times per sample, so the rate over
    many parallel streams estimates 1/ARL directly. h is found by bisection on a log
    scale with the same random numbers at every step (monotone, deterministic), and the
    upper end is returned (at most the budgeted rate). ``key`` names what the simulation
    depends on; results are cached in memory and, with ``cache_dir``, on disk.
    """
    if arl <= 1:
        raise ValueError(f"arl must be > 1 (got {arl})")
    full_key = hashlib.sha256(f"{key}|arl={arl}|seed={seed}|b={budget_samples}".encode()).hexdigest()[:24]
    if full_key in _CACHE:
        return _CACHE[full_key]
    path = cache_dir / f"cusum-h-{full_key}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            h = float(json.loads(path.read_text())["h"])
            _CACHE[full_key] = h
            return h
        except (OSError, ValueError, KeyError):
            pass
    # Enough samples for ~400 alarms at the target rate, spread over many parallel streams:
    # numpy's cost is per step, not per stream. Streams start at zero, whose alarm rate
    # over a stretch shorter than the ARL is the same as in steady state to within a few
    # per cent, because CUSUM run lengths are close to geometric.
    total = int(min(max(400 * arl, 200_000), budget_samples))
    streams = 2048
    length = max(total // streams, 64)
    target = 1.0 / arl
    lo, hi = 0.05, max(1.5 * math.log(arl), 1.0)
    while rate(hi, streams, length, seed) > target:
        lo, hi = hi, hi * 2
    for _ in range(16):
        if hi / lo < 1.01:
            break
        mid = math.sqrt(lo * hi)
        if rate(mid, streams, length, seed) > target:
            lo = mid
        else:
            hi = mid
    h = hi
    _CACHE[full_key] = h
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"h": h, "arl": arl, "key": key, "seed": seed}))
        except OSError:
            pass  # a cache that cannot be written only costs time
    return h


def calibrate_cusum(sampler: Sampler, arl: float, *, key: str, cache_dir: Path | None = None,
                    seed: int = 20240601) -> float:
    return calibrate_threshold(
        lambda h, st, ln, sd: alarm_rate_cusum(sampler, h, streams=st, length=ln, seed=sd),
        arl, key=f"cusum|{key}", cache_dir=cache_dir, seed=seed,
    )


def stratified_beta(rng: np.random.Generator, a: float, b: float, size: int) -> np.ndarray:
    """``size`` draws from Beta(a, b), one in each of ``size`` equal-probability strata.

    The alarm rate averaged over an uncertain clean rate is dominated by its upper tail (a
    stream whose true rate is high alarms far more often), so plain random draws leave the
    calibrated h at the mercy of how many of a few thousand streams land there: thresholds
    of neighbouring reference counts came out up to 5 % apart, and the false-alarm rate
    with them up to 1.5x. One draw per stratum keeps the average unbiased and the tail
    always covered, so h varies smoothly with the counts.
    """
    from scipy import stats

    u = (np.arange(size) + rng.random(size)) / size
    return np.asarray(stats.beta.ppf(u, a, b), dtype=float)


class _Bernoulli(Sampler):
    def __init__(self, p0: float, p1: float, reference_k: int | None, reference_n: int | None,
                 rate_beta: tuple[float, float] | None = None) -> None:
        self.up, self.down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
        self.p0, self.k, self.n = p0, reference_k, reference_n
        self.beta = rate_beta

    def start(self, rng: np.random.Generator, streams: int) -> None:
        super().start(rng, streams)
        if self.beta is not None:
            self.p = stratified_beta(rng, self.beta[0], self.beta[1], streams).reshape(1, streams, 1)
        elif self.k is not None and self.n:
            # the true rate is uncertain given the reference counts: drawn from the upper
            # confidence distribution Beta(k + 1, n - k), whose quantiles are the exact
            # (Clopper-Pearson) upper bounds. The promise is averaged over references at the
            # true rate, not over a prior; the Jeffreys posterior Beta(k + 1/2, n - k + 1/2) left
            # that average at 0.92-1.01 x the budget (n 300-1000, p 0.3-2 %), this errs above it.
            a, b = reference_rate_beta(self.k, self.n)
            self.p = stratified_beta(rng, a, b, streams).reshape(1, streams, 1)
        else:
            self.p = np.full((1, streams, 1), self.p0)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.random((n, self.streams, 1)) < self.p
        return np.where(x, self.up, self.down)


def reference_rate_beta(k: int, n: int) -> tuple[float, float]:
    """The law the calibration draws the true clean rate from, given k flagged of n reference outputs."""
    return k + 1.0, max(n - k, 0.5)


def bernoulli_sampler(p0: float, p1: float, *, reference_k: int | None = None,
                      reference_n: int | None = None, rate_beta: tuple[float, float] | None = None) -> Sampler:
    """Clean llr increments of a Bernoulli CUSUM. With the reference counts, each stream's true
    rate is drawn from what the counts allow (:func:`reference_rate_beta`), so h keeps the
    budget averaged over references despite p0 being an estimate.
    ``rate_beta`` = (a, b) draws it from Beta(a, b) instead (e.g. the exact distribution of
    the exceedance rate of a threshold set at a reference order statistic)."""
    return _Bernoulli(p0, p1, reference_k, reference_n, rate_beta)


class _Bootstrap(Sampler):
    def __init__(self, rows: np.ndarray, to_llr: Callable[[np.ndarray], np.ndarray] | None,
                 reference_uncertainty: bool) -> None:
        self.rows = np.atleast_2d(np.asarray(rows, dtype=float))
        self.to_llr = to_llr
        self.uncertain = reference_uncertainty

    def start(self, rng: np.random.Generator, streams: int) -> None:
        super().start(rng, streams)
        n, k = self.rows.shape
        self.offset = np.zeros((1, streams, k))
        self.scale = np.ones((1, streams, k))
        if self.uncertain:
            # The reference's mean and spread are estimates: the detector standardises new
            # outputs with them. Bootstrap analogue: the reference rows play the population
            # and each stream is standardised with a bootstrap replicate's mean and spread,
            # so the clean data is simulated with the reference's own estimation error.
            for j in range(streams):
                boot = self.rows[rng.integers(0, n, size=n)]
                sd = boot.std(axis=0, ddof=1)
                self.offset[0, j] = -boot.mean(axis=0)
                self.scale[0, j] = 1.0 / np.where(sd > 1e-9, sd, 1.0)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(0, self.rows.shape[0], size=(n, self.streams))
        x = (self.rows[idx] + self.offset) * self.scale
        if self.to_llr is None:
            return x
        return self.to_llr(x.reshape(-1, x.shape[-1])).reshape(n, self.streams, -1)


def bootstrap_sampler(rows: np.ndarray, *, to_llr: Callable[[np.ndarray], np.ndarray] | None = None,
                      reference_uncertainty: bool = False) -> Sampler:
    """Clean data by resampling reference rows (keeps their shape and correlations), mapped to
    llr increments by ``to_llr`` when given; optionally with the reference's own uncertainty."""
    return _Bootstrap(rows, to_llr, reference_uncertainty)
