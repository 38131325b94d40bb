"""False-alarm budgets with an estimated reference: the Bernoulli CUSUM's threshold over the
uncertainty of p0, and the per-window embedding test's permutation null (values by hand,
level on clean data whatever its shape, power on a shift, old state restarts)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from monitors.detectors import DetectorContext, Frame, Reference, build_detector, cusum
from monitors.detectors.reports import embedding_permutation_test, permutations_for
from monitors.detectors.sequential import BernoulliCusum
from monitors.reference import whiten


class _Cfg:
    def __init__(self, kind: str, **kw: object) -> None:
        self.kind, self.rollback = kind, False
        self.arl = self.p1 = self.threshold = self.shift_sigmas = None
        for k, v in kw.items():
            setattr(self, k, v)


# ------------------------------------------------------------------ Bernoulli CUSUM, p0 estimated


def test_stratified_beta_one_draw_per_stratum() -> None:
    rng = np.random.default_rng(0)
    draws = cusum.stratified_beta(rng, 10.5, 990.5, 400)
    u = stats.beta.cdf(draws, 10.5, 990.5)
    strata = np.floor(u * 400).astype(int)
    assert sorted(strata.tolist()) == list(range(400))  # every stratum exactly once
    assert draws.mean() == pytest.approx(10.5 / 1001, rel=0.01)


class _AtRate(cusum.Sampler):
    """Clean flags at the true rate ``p``, scored with the estimate ``p0``."""

    def __init__(self, p: float, p0: float, p1: float) -> None:
        self.p, self.up, self.down = p, math.log(p1 / p0), math.log((1 - p1) / (1 - p0))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.where(rng.random((n, self.streams, 1)) < self.p, self.up, self.down)


def test_estimated_p0_keeps_the_budget_averaged_over_references() -> None:
    """The promise is averaged over references: k ~ Binomial(n, p) violations in the reference,
    h calibrated for each k, and the clean stream runs at the true p. Computed over k with its
    binomial weights (no sampling noise from drawing references)."""
    n, p, p1, arl = 1000, 0.01, 0.10, 2000.0
    ks = np.arange(int(stats.binom.ppf(1e-3, n, p)), int(stats.binom.ppf(1 - 1e-3, n, p)) + 1)
    weights = stats.binom.pmf(ks, n, p)
    weights = weights / weights.sum()
    rates = []
    for k in ks:
        p0 = cusum.estimate_p0(int(k), n)
        q1 = cusum.design_p1(p0, p1)
        h = cusum.calibrate_cusum(cusum.bernoulli_sampler(p0, q1, reference_k=int(k), reference_n=n), arl,
                                  key=f"test-freq|{k}/{n}|{q1}")
        rates.append(cusum.alarm_rate_cusum(_AtRate(p, p0, q1), h, streams=2048, length=3000, seed=5))
    average = float(np.dot(weights, rates))
    assert average <= 1.1 / arl  # at or under the budget, up to the simulation's noise (~3%)
    # and the estimation error is real: a reference that saw few violations alarms more
    assert rates[0] > 1.0 / arl > rates[-1]


def test_state_from_old_parameters_restarts() -> None:
    ref = Reference(frame=Frame(flags={"violation": np.zeros(500, dtype=np.int8)}))
    det = BernoulliCusum("policy_violations", _Cfg("cusum", arl=1000.0, p1=0.2))
    ctx = DetectorContext(write_report=False)
    quiet = Frame(flags={"violation": np.zeros(5, dtype=np.int8)})
    stale = {"flag": "violation", "p0": 0.001, "p1": 0.2, "h": 1.234, "arl": 1000.0, "s": [1.2]}
    res = det.run(reference=ref, window=quiet, state=stale, context=ctx)
    assert res.verdict == "ok" and res.state is not None
    assert res.state["h"] != 1.234 and res.state["s"] == [0.0]  # started afresh with the current threshold
    assert res.state["calibration"] == "upper-confidence"
    # a state saved before the calibration was named (same numbers, just under the threshold) restarts too
    old = {k: v for k, v in res.state.items() if k != "calibration"} | {"s": [res.state["h"] - 1e-6]}
    one = Frame(flags={"violation": np.array([1], dtype=np.int8)})
    assert det.run(reference=ref, window=one, state=old, context=ctx).verdict == "ok"
    assert det.run(reference=ref, window=one, state={**old, "calibration": "upper-confidence"},
                   context=ctx).verdict == "drift"


# ------------------------------------------------------------------ embedding permutation test


def test_permutation_statistic_and_p_value_by_hand() -> None:
    ref = np.array([[-1.0], [1.0], [0.0], [0.0]])
    cur = np.array([[2.0], [2.0]])
    pooled = np.vstack([cur, ref])
    expected_t = (2.0 - 0.0) ** 2 / pooled.var(ddof=1) / (1 / 2 + 1 / 4)
    # exact permutation p-value: the share of the 15 splits of 2 rows out of 6 at least as extreme
    def t_of(pick: tuple[int, ...]) -> float:
        mask = np.zeros(6, dtype=bool)
        mask[list(pick)] = True
        return float((pooled[mask].mean() - pooled[~mask].mean()) ** 2 / pooled.var(ddof=1) / 0.75)

    splits = [t_of(c) for c in combinations(range(6), 2)]
    exact_p = sum(t >= expected_t - 1e-12 for t in splits) / len(splits)
    assert exact_p == pytest.approx(1 / 15)
    test = embedding_permutation_test(ref, cur, alpha=0.1, permutations=20_000, seed=1)
    assert test.statistic == pytest.approx(expected_t)
    assert test.p_value == pytest.approx(exact_p, abs=0.01)


def test_permutation_count_and_critical_value_match_the_p_value() -> None:
    assert permutations_for(0.01) == 999 and permutations_for(0.001) == 9999
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((300, 4))
    for shift in (0.0, 0.3, 0.6):
        cur = rng.standard_normal((40, 4)) + shift
        t = embedding_permutation_test(ref, cur, alpha=0.05, permutations=199, seed=2)
        assert (t.p_value <= 0.05) == (t.statistic > t.critical)


@pytest.mark.parametrize("shape", ["skewed", "clusters"])
def test_permutation_test_keeps_its_level_on_non_gaussian_rows(shape: str) -> None:
    """Level alpha averaged over references, for rows whose tails a chi-squared null gets wrong."""
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((6, 8)) * 3.0

    def rows(m: int) -> np.ndarray:
        if shape == "skewed":
            return rng.exponential(1.0, size=(m, 8)) ** 2
        return centres[rng.integers(0, 6, size=m)] + 0.2 * rng.standard_normal((m, 8))

    alpha, trials, rejected = 0.05, 600, 0
    for _ in range(trials):  # a fresh reference each time: its own sampling error counts
        t = embedding_permutation_test(rows(150), rows(20), alpha=alpha, permutations=99)
        rejected += t.p_value <= alpha
    se = math.sqrt(alpha * (1 - alpha) / trials)
    assert rejected / trials <= alpha + 2.5 * se


def test_embedding_detector_clean_rarely_alarms_and_shift_alarms() -> None:
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.standard_normal((32, 32)))[0]
    scales = np.linspace(3.0, 0.3, 32)

    def emb(m: int, shift: float = 0.0) -> np.ndarray:
        x = (rng.standard_t(5, size=(m, 32)) * scales) @ basis.T
        return x + shift * scales[0] * basis[:, 0]

    raw = emb(1000)
    mean, comps, proj = whiten(raw, k=8)
    ref = Reference(frame=Frame(embeddings=proj, numeric={"x": np.zeros(len(proj))}), emb_mean=mean,
                    emb_components=comps)
    det = build_detector("embeddings", _Cfg("evidently_embeddings", arl=100.0))
    ctx = DetectorContext(write_report=False)
    clean = [det.run(reference=ref, window=Frame(embeddings=emb(50)), state=None, context=ctx) for _ in range(100)]
    assert sum(r.verdict == "drift" for r in clean) <= 4  # alpha 0.01: P(more than 4 of 100) < 0.4%
    assert clean[0].threshold == pytest.approx(0.01) and clean[0].details["test"] == "permutation"
    window = Frame(embeddings=emb(50, shift=0.8))
    shifted = det.run(reference=ref, window=window, state=None, context=ctx)
    assert shifted.verdict == "drift" and shifted.statistic is not None and shifted.statistic <= 0.01
    # the same window gives the same verdict and p-value in every worker
    again = det.run(reference=ref, window=window, state=None, context=ctx)
    assert again.statistic == shifted.statistic


def test_the_relabelling_seed_does_not_depend_on_which_rows_are_the_window() -> None:
    """Every split of the same pooled rows gets the same random splits (exactness of the
    Monte Carlo permutation p-value); other rows get other splits."""
    from monitors.detectors.reports import relabelling_seed

    rng = np.random.default_rng(8)
    pooled = rng.standard_normal((60, 5))
    seeds = set()
    for _ in range(5):
        order = rng.permutation(60)
        seeds.add(relabelling_seed(pooled[order[10:]], pooled[order[:10]]))
    assert len(seeds) == 1
    assert relabelling_seed(pooled[10:], pooled[:10]) not in (relabelling_seed(pooled[11:], pooled[:11]),
                                                              relabelling_seed(pooled[10:] + 1e-3, pooled[:10]))
