"""The statistics behind the gate's verdicts (see STATISTICS.md).

Paired tests only where the data are paired (every case is run by the candidate and by
the baseline on the same input): exact McNemar for binary outcomes, a sign-flip
permutation test for paired continuous scores. Wilson intervals for rates (they behave
at zero violations), Connor's power formula for the minimum detectable drop of a suite
of a given size, the four-fifths ratio, and Holm's step-down correction for the many
tests a bias verdict rests on. Pure functions of numbers; deterministic (the Monte
Carlo permutation test takes a fixed seed).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize
from scipy.stats import binom, norm

Alternative = Literal["greater", "less", "two-sided"]

# Exact enumeration of sign flips up to this many non-zero differences (2**16 = 65,536
# patterns, a few milliseconds); above it a seeded Monte Carlo sample.
EXACT_SIGN_FLIP_MAX = 16


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar on discordant pairs: ``b`` = candidate worse, ``c`` = candidate better."""

    b: int
    c: int
    p_value: float
    alternative: Alternative

    @property
    def discordant(self) -> int:
        return self.b + self.c


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (got {value!r})")


def mcnemar_exact(b: int, c: int, alternative: Alternative = "greater") -> McNemarResult:
    """Exact (binomial) McNemar test on the discordant counts of a paired 2x2 table.

    Under "no difference" ``b ~ Binomial(b + c, 1/2)``. ``greater``: the candidate is worse
    (``P(X >= b)``); ``less``: better (``P(X <= b)``); ``two-sided``:
    ``min(1, 2 * min(P(X >= b), P(X <= b)))``. With no discordant pair every p-value is 1.
    """
    _check_count("b", b)
    _check_count("c", c)
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0, alternative)
    upper = float(binom.sf(b - 1, n, 0.5))  # P(X >= b)
    lower = float(binom.cdf(b, n, 0.5))  # P(X <= b)
    if alternative == "greater":
        p = upper
    elif alternative == "less":
        p = lower
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * min(upper, lower))
    else:
        raise ValueError(f"alternative must be greater, less or two-sided (got {alternative!r})")
    return McNemarResult(b, c, min(1.0, p), alternative)


def discordant_counts(candidate_ok: Sequence[bool], baseline_ok: Sequence[bool]) -> tuple[int, int]:
    """``(b, c)`` from paired outcomes: b = candidate fails where baseline succeeds, c = the reverse."""
    if len(candidate_ok) != len(baseline_ok):
        raise ValueError(f"paired outcomes differ in length ({len(candidate_ok)} vs {len(baseline_ok)})")
    b = sum(1 for x, y in zip(candidate_ok, baseline_ok, strict=True) if not x and y)
    c = sum(1 for x, y in zip(candidate_ok, baseline_ok, strict=True) if x and not y)
    return b, c


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` events in ``n`` trials (two-sided, at ``confidence``)."""
    _check_count("k", k)
    _check_count("n", n)
    if k > n:
        raise ValueError(f"k must not exceed n (got k={k}, n={n})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (got {confidence})")
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = (centre - half) / denom, (centre + half) / denom
    # Exact endpoints at the boundaries (floating point leaves ~1e-17 otherwise).
    return (0.0 if k == 0 else max(0.0, lo)), (1.0 if k == n else min(1.0, hi))


def connor_pairs_needed(delta: float, psi: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Pairs needed (Connor 1987) to detect a paired difference ``delta`` with discordance ``psi``.

    One-sided level ``alpha``, power ``power``:
    ``n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2``; needs ``0 < |delta| <= psi <= 1``.
    """
    delta = abs(delta)
    if not 0.0 < delta <= psi <= 1.0:
        raise ValueError(f"need 0 < |delta| <= psi <= 1 (got delta={delta}, psi={psi})")
    za, zb = float(norm.ppf(1 - alpha)), float(norm.ppf(power))
    return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / (delta * delta)


def connor_power(n: int, delta: float, psi: float, alpha: float = 0.05) -> float:
    """Power of the one-sided paired test with ``n`` pairs to detect ``delta`` at discordance ``psi``."""
    delta = abs(delta)
    if not 0.0 < delta <= psi <= 1.0:
        raise ValueError(f"need 0 < |delta| <= psi <= 1 (got delta={delta}, psi={psi})")
    za = float(norm.ppf(1 - alpha))
    spread = math.sqrt(psi - delta * delta)
    if spread == 0.0:
        return 1.0
    return float(norm.cdf((math.sqrt(n) * delta - za * math.sqrt(psi)) / spread))


def minimum_detectable_drop(n: int, psi: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest paired difference ``n`` pairs detect at ``alpha`` with ``power`` (Connor, solved for delta).

    ``psi`` is the discordance probability (share of pairs where the two disagree); a drop
    can never exceed it. ``None`` when even ``delta = psi`` needs more than ``n`` pairs.
    """
    _check_count("n", n)
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"psi must be in (0, 1] (got {psi})")
    if n == 0 or connor_pairs_needed(psi, psi, alpha, power) > n:
        return None
    lo = 1e-9
    if connor_pairs_needed(lo, psi, alpha, power) <= n:
        return lo
    # pairs_needed decreases in delta on (0, psi]: one root.
    return float(optimize.brentq(lambda d: connor_pairs_needed(d, psi, alpha, power) - n, lo, psi, xtol=1e-10))


def sign_flip_test(
    diffs: Sequence[float] | np.ndarray,
    alternative: Alternative = "greater",
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Paired permutation (sign-flip) test on per-pair differences; statistic: the mean.

    Under "no difference" each difference is as likely to carry either sign. Exact over
    all ``2**m`` sign patterns when ``m`` (the non-zero differences) is at most
    ``EXACT_SIGN_FLIP_MAX``; otherwise a Monte Carlo sample with a fixed seed, with the
    ``(1 + hits) / (1 + n_resamples)`` estimate that is never zero.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError("diffs must be a flat sequence of finite numbers")
    nz = d[d != 0.0]
    m = len(nz)
    if m == 0:
        return 1.0
    observed = float(nz.sum())
    # A relative tolerance so that ties in floating point count as ties.
    tol = 1e-12 * max(1.0, float(np.abs(nz).sum()))
    if m <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        stats = signs @ nz
        return _tail(stats, observed, alternative, tol, exact=True)
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    # In chunks, to bound memory on large suites.
    for start in range(0, n_resamples, 2048):
        stop = min(start + 2048, n_resamples)
        signs = rng.choice((-1.0, 1.0), size=(stop - start, m))
        stats[start:stop] = signs @ nz
    return _tail(stats, observed, alternative, tol, exact=False)


# Exact enumeration of within-set arrangements up to this many (else seeded Monte Carlo).
EXACT_ARRANGEMENTS_MAX = 200_000


def group_range_test(
    values: Sequence[Sequence[float]] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Within-set permutation test that k groups are treated alike; statistic: the range.

    ``values[j][g]`` is the outcome (0/1, or a score) of group ``g`` in matched set ``j``.
    Under "the attribute makes no difference" the k outcomes of a set are exchangeable, so
    the null distribution comes from permuting each row independently. The statistic is
    the largest minus the smallest group total: picking the extreme pair after looking is
    part of the statistic, so no multiplicity correction for the pair is needed (unlike
    testing the extreme pair and multiplying by the number of pairs, it keeps the power of
    a single test). For two groups it is the two-sided exact McNemar test on binary data
    and the two-sided sign-flip test on scores. Rows with one value for every group carry
    no information and are dropped. Exact when the arrangements of the other rows number at
    most ``EXACT_ARRANGEMENTS_MAX``, else a Monte Carlo sample with a fixed seed.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError("values must be a (sets, groups) table with at least two groups")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite numbers")
    informative = v[np.ptp(v, axis=1) > 0] if len(v) else v
    if len(informative) == 0:
        return 1.0
    k = v.shape[1]
    totals = informative.sum(axis=0)
    observed = float(totals.max() - totals.min())
    tol = 1e-9 * max(1.0, float(np.abs(informative).sum()))
    arrangements = [sorted(set(itertools.permutations(row.tolist()))) for row in informative]
    count = math.prod(len(a) for a in arrangements)
    if count <= EXACT_ARRANGEMENTS_MAX:
        sums = np.zeros((1, k))
        for rows in arrangements:
            sums = (sums[:, None, :] + np.asarray(rows)[None, :, :]).reshape(-1, k)
        stats = sums.max(axis=1) - sums.min(axis=1)
        return float(np.mean(stats >= observed - tol))
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 1024):
        n = min(1024, n_resamples - start)
        order = np.argsort(rng.random((n, *informative.shape)), axis=2)  # (n, sets, k)
        perm = np.take_along_axis(np.broadcast_to(informative, order.shape), order, axis=2)
        sums = perm.sum(axis=1)  # (n, k)
        hits += int(np.sum(sums.max(axis=1) - sums.min(axis=1) >= observed - tol))
    return min(1.0, (1 + hits) / (1 + n_resamples))


def _tail(stats: np.ndarray, observed: float, alternative: Alternative, tol: float, *, exact: bool) -> float:
    ge = int(np.sum(stats >= observed - tol))
    le = int(np.sum(stats <= observed + tol))
    total = len(stats)
    if exact:
        upper, lower = ge / total, le / total
    else:
        upper, lower = (1 + ge) / (1 + total), (1 + le) / (1 + total)
    if alternative == "greater":
        return min(1.0, upper)
    if alternative == "less":
        return min(1.0, lower)
    if alternative == "two-sided":
        return min(1.0, 2.0 * min(upper, lower))
    raise ValueError(f"alternative must be greater, less or two-sided (got {alternative!r})")


@dataclass(frozen=True)
class FourFifths:
    """Lowest favourable-outcome rate over the highest (EEOC 1978: adverse impact below 0.8)."""

    ratio: float
    lowest_group: str
    highest_group: str
    rates: dict[str, float]


def four_fifths_ratio(rates: Mapping[str, float]) -> FourFifths:
    """Four-fifths ratio over groups; 1.0 when no group has any favourable outcome."""
    if not rates:
        raise ValueError("four_fifths_ratio needs at least one group rate")
    for group, r in rates.items():
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"rate of group {group!r} must be between 0 and 1 (got {r})")
    # Sorted for ties: the same groups are named on every run.
    ordered = sorted(rates.items())
    hi_group, hi = max(ordered, key=lambda kv: kv[1])
    lo_group, lo = min(ordered, key=lambda kv: kv[1])
    ratio = 1.0 if hi == 0.0 else lo / hi
    return FourFifths(ratio, lo_group, hi_group, dict(ordered))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone), in the input order.

    Reject hypothesis i at family-wise level alpha when ``adjusted[i] <= alpha``.
    """
    m = len(p_values)
    for p in p_values:
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"p-values must be between 0 and 1 (got {p})")
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PairedDifferenceResult:
    """Tango's score test of a paired difference against a margin: ``b`` = first worse only, ``c`` = the reverse."""

    b: int
    c: int
    n: int
    margin: float
    z: float
    p_value: float


def paired_difference_test(b: int, c: int, n: int, margin: float = 0.0) -> PairedDifferenceResult:
    """One-sided score test (Tango 1998) that a paired difference of proportions exceeds ``margin``.

    ``delta = p_b - p_c`` (e.g. candidate-only minus active-only violations, as shares of the
    ``n`` pairs). H0: ``delta <= margin``, H1: ``delta > margin``. The statistic is
    ``(b - c - n * margin) / sqrt(n * (2 * q + margin * (1 - margin)))`` with ``q`` the
    maximum-likelihood estimate of ``p_c`` restricted to ``delta = margin`` (the positive
    root of ``2n q^2 + (-b - c + (2n - b + c) margin) q - c margin (1 - margin) = 0``),
    referred to the standard normal. At ``margin = 0`` it is McNemar's asymptotic
    ``(b - c) / sqrt(b + c)``; the exact McNemar test (:func:`mcnemar_exact`) is the one to
    use there. A margin of 1 or more tolerates everything (p = 1).
    """
    _check_count("b", b)
    _check_count("c", c)
    _check_count("n", n)
    if b + c > n:
        raise ValueError(f"discordant pairs ({b} + {c}) exceed the pairs ({n})")
    if math.isnan(margin) or margin < 0.0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    if n == 0 or margin >= 1.0:
        return PairedDifferenceResult(b, c, n, margin, 0.0, 1.0)
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * margin
    qc = -c * margin * (1.0 - margin)
    q = (math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0)) - qb) / (2.0 * qa)
    var = n * (2.0 * q + margin * (1.0 - margin))
    if var <= 0.0:  # margin 0 and no discordant pair: no evidence either way
        return PairedDifferenceResult(b, c, n, margin, 0.0, 1.0)
    z = (b - c - n * margin) / math.sqrt(var)
    return PairedDifferenceResult(b, c, n, margin, float(z), float(norm.sf(z)))


def paired_pairs_needed(delta: float, psi: float, alpha: float = 0.05, power: float = 0.8,
                        margin: float = 0.0) -> float:
    """Pairs a one-sided paired test needs to detect a true difference ``delta`` over ``margin``.

    ``n = (z_a sqrt(psi - margin^2) + z_b sqrt(psi - delta^2))^2 / (delta - margin)^2``, the
    score test's null variance taken at the same discordance ``psi``; at ``margin = 0``
    Connor's formula (:func:`connor_pairs_needed`). Needs ``margin < delta <= psi <= 1``.
    """
    if margin == 0.0:
        return connor_pairs_needed(delta, psi, alpha, power)
    if not 0.0 <= margin < delta <= psi <= 1.0:
        raise ValueError(f"need 0 <= margin < delta <= psi <= 1 (got margin={margin}, delta={delta}, psi={psi})")
    za, zb = float(norm.ppf(1 - alpha)), float(norm.ppf(power))
    spread0 = math.sqrt(max(psi - margin * margin, 0.0))
    spread1 = math.sqrt(max(psi - delta * delta, 0.0))
    return (za * spread0 + zb * spread1) ** 2 / (delta - margin) ** 2


def minimum_detectable_increase(n: int, psi: float, alpha: float = 0.05, power: float = 0.8,
                                margin: float = 0.0) -> float | None:
    """Smallest true paired increase (a share of pairs) that ``n`` pairs detect over ``margin``.

    ``psi`` is the discordance seen (share of pairs where the two differ). An increase
    ``delta`` needs at least ``delta`` of the pairs discordant, so the discordance is taken
    as ``max(psi, delta)``: with identical answers (psi = 0) the result is still the
    smallest increase the test could see, not undefined. Solves :func:`paired_pairs_needed`
    for delta (it decreases in delta); ``None`` when even ``delta = 1`` needs more than ``n``.
    """
    _check_count("n", n)
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"psi must be in [0, 1] (got {psi})")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1) (got {margin})")
    if n == 0:
        return None

    def excess(d: float) -> float:
        return paired_pairs_needed(d, max(psi, d), alpha, power, margin) - n

    hi = 1.0
    if excess(hi) > 0:
        return None
    lo = margin + 1e-9
    if excess(lo) <= 0:
        return lo
    return float(optimize.brentq(excess, lo, hi, xtol=1e-10))


def mean_shift_mde(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """How far beyond its margin a mean of ``n`` paired differences with spread ``sd`` must lie
    for a one-sided level-``alpha`` test to see it with ``power``: ``(z_a + z_b) sd / sqrt(n)``
    (normal approximation; None without pairs)."""
    _check_count("n", n)
    if not sd >= 0.0:
        raise ValueError(f"sd must be >= 0 (got {sd})")
    if n == 0:
        return None
    return (float(norm.ppf(1 - alpha)) + float(norm.ppf(power))) * sd / math.sqrt(n)


@functools.lru_cache(maxsize=64)
def _mcnemar_critical_counts(n: int, level: float) -> np.ndarray:
    """For d = 1..n discordant pairs, the smallest worse count the one-sided exact test rejects
    at ``level`` (d + 1 where none does)."""
    out = np.empty(n, dtype=int)
    for d in range(1, n + 1):
        tails = binom.sf(np.arange(-1, d), d, 0.5)  # tails[b] = P(Bin(d, 1/2) >= b), b = 0..d
        reject = np.nonzero(tails <= level)[0]
        out[d - 1] = int(reject[0]) if len(reject) else d + 1
    return out


def mcnemar_exact_power(n: int, delta: float, q: float, level: float) -> float:
    """Power of the one-sided exact McNemar test at ``level`` over ``n`` pairs (exact, not Connor's normal form).

    Each pair is independently "candidate worse" with probability ``delta + q``,
    "candidate better" with probability ``q`` and concordant otherwise: ``q`` is the
    discordance in both directions that a change with no effect also makes, ``delta`` the
    true rise. Sums over the number of discordant pairs D ~ Bin(n, delta + 2q); given D the
    worse count is Bin(D, (delta + q) / (delta + 2q)), and the test rejects from the
    smallest count whose exact tail P(Bin(D, 1/2) >= b) is at most ``level``.
    """
    _check_count("n", n)
    if q < 0.0 or delta < 0.0 or delta + 2 * q > 1.0 + 1e-12:
        raise ValueError(f"need q >= 0, delta >= 0 and delta + 2q <= 1 (got delta={delta}, q={q})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    p_disc = min(1.0, delta + 2 * q)
    if n == 0 or p_disc == 0.0:
        return 0.0
    d = np.arange(1, n + 1)
    critical = _mcnemar_critical_counts(n, level)
    return float(np.sum(binom.pmf(d, n, p_disc) * binom.sf(critical - 1, d, (delta + q) / p_disc)))


def minimum_detectable_rise(n: int, q: float, level: float, power: float = 0.8) -> float | None:
    """Smallest rise ``delta`` (a share of pairs) that the exact McNemar test at ``level`` sees with ``power``.

    ``q`` as in :func:`mcnemar_exact_power`. ``None`` when even the largest possible rise
    (``1 - 2q``) is seen with less than ``power``: the suite is too small for that level.
    """
    _check_count("n", n)
    if not 0.0 <= q < 0.5:
        raise ValueError(f"q must be in [0, 0.5) (got {q})")
    hi = 1.0 - 2 * q
    if n == 0 or mcnemar_exact_power(n, hi, q, level) < power:
        return None
    lo = 0.0
    # power rises with delta: bisect to a thousandth of a share
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        if mcnemar_exact_power(n, mid, q, level) >= power:
            hi = mid
        else:
            lo = mid
    return hi
