"""Each statistic against values computed by hand and against a second implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evaluators.stats import (
    connor_pairs_needed,
    connor_power,
    discordant_counts,
    four_fifths_ratio,
    group_range_test,
    holm,
    mcnemar_exact,
    mcnemar_exact_power,
    minimum_detectable_drop,
    minimum_detectable_rise,
    sign_flip_test,
    wilson_interval,
)


def test_mcnemar_hand_computed_table() -> None:
    # b=10, c=2: P(X >= 10 | n=12, 1/2) = (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 79/4096.
    r = mcnemar_exact(10, 2)
    assert r.p_value == pytest.approx(79 / 4096, abs=1e-15)
    assert mcnemar_exact(10, 2, "two-sided").p_value == pytest.approx(2 * 79 / 4096, abs=1e-15)
    # The candidate being better is not evidence of it being worse.
    assert mcnemar_exact(2, 10).p_value > 0.99
    assert mcnemar_exact(2, 10, "less").p_value == pytest.approx(79 / 4096)


def test_mcnemar_edge_cases() -> None:
    assert mcnemar_exact(0, 0).p_value == 1.0
    assert mcnemar_exact(0, 0, "two-sided").p_value == 1.0
    assert mcnemar_exact(5, 5, "two-sided").p_value == 1.0
    # b=5, c=0: 1/32 one-sided.
    assert mcnemar_exact(5, 0).p_value == pytest.approx(1 / 32)
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact(1, 3, "sideways")  # type: ignore[arg-type]


def test_mcnemar_matches_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    for b, c in [(10, 2), (7, 3), (0, 6), (25, 11), (40, 40)]:
        ref = sm.mcnemar(np.array([[50, b], [c, 50]]), exact=True).pvalue
        assert mcnemar_exact(b, c, "two-sided").p_value == pytest.approx(ref, rel=1e-9)


def test_mcnemar_one_sided_matches_binomtest() -> None:
    for b, c in [(10, 2), (3, 9), (17, 4)]:
        ref = sps.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert mcnemar_exact(b, c).p_value == pytest.approx(ref, rel=1e-12)


def test_lm_eval_harness_example_paired_beats_unpaired() -> None:
    # The pairing matters: a table with 220 items, 16 vs 4 discordant.
    assert mcnemar_exact(16, 4, "two-sided").p_value < 0.02


def test_discordant_counts() -> None:
    cand = [True, False, False, True, True]
    base = [True, True, False, False, True]
    assert discordant_counts(cand, base) == (1, 1)
    with pytest.raises(ValueError, match="length"):
        discordant_counts([True], [True, False])


def test_wilson_hand_values() -> None:
    lo, hi = wilson_interval(0, 50)
    z = 1.959963984540054
    assert lo == 0.0
    assert hi == pytest.approx((z * z / 100 + z * math.sqrt(z * z / 10000)) / (1 + z * z / 50))
    assert hi == pytest.approx(0.0713, abs=1e-4)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.071347599, abs=1e-8)
    # A textbook value: 8 of 20 -> (0.2188, 0.6134).
    lo, hi = wilson_interval(8, 20)
    assert (lo, hi) == (pytest.approx(0.2188, abs=1e-4), pytest.approx(0.6134, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="exceed"):
        wilson_interval(3, 2)


def test_wilson_matches_statsmodels() -> None:
    prop = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in [(0, 30), (3, 30), (12, 37), (99, 100)]:
        ref = prop.proportion_confint(k, n, alpha=0.05, method="wilson")
        got = wilson_interval(k, n)
        assert got[0] == pytest.approx(ref[0], abs=1e-12) and got[1] == pytest.approx(ref[1], abs=1e-12)


def test_connor_round_trip_and_known_value() -> None:
    # delta=0.1, psi=0.2, alpha=0.05 one-sided, power 0.8:
    # (1.6449*sqrt(.2) + 0.8416*sqrt(.19))^2 / .01 = (0.73560 + 0.36685)^2 / .01 = 121.54
    assert connor_pairs_needed(0.1, 0.2) == pytest.approx(121.54, abs=0.05)
    d = minimum_detectable_drop(300, 0.1)
    assert d is not None
    assert connor_pairs_needed(d, 0.1) == pytest.approx(300, rel=1e-6)
    assert connor_power(300, d, 0.1) == pytest.approx(0.8, abs=1e-6)
    # More pairs detect smaller drops; more discordance needs larger drops.
    assert minimum_detectable_drop(1200, 0.1) < d  # type: ignore[operator]
    assert minimum_detectable_drop(300, 0.3) > d  # type: ignore[operator]
    # Too few pairs: nothing is detectable.
    assert minimum_detectable_drop(3, 0.1) is None
    with pytest.raises(ValueError):
        connor_pairs_needed(0.3, 0.2)


def test_sign_flip_exact_hand_value() -> None:
    # Sum 5.5; of the 32 sign patterns exactly 4 reach >= 5.5.
    assert sign_flip_test([1, 2, 3, -1, 0.5]) == pytest.approx(4 / 32)
    assert sign_flip_test([0, 0, 0]) == 1.0
    assert sign_flip_test([1, 1, 1]) == pytest.approx(1 / 8)
    assert sign_flip_test([1, 1, 1], "two-sided") == pytest.approx(2 / 8)
    assert sign_flip_test([1, 1, 1], "less") == 1.0


def test_sign_flip_matches_scipy_exact() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 1.0, size=12)
    ref = sps.permutation_test(
        (x,), np.mean, permutation_type="samples", alternative="greater", n_resamples=np.inf
    ).pvalue
    assert sign_flip_test(x) == pytest.approx(ref, rel=1e-9)


def test_sign_flip_monte_carlo_is_seeded_and_sensible() -> None:
    rng = np.random.default_rng(5)
    shifted = rng.normal(0.5, 1.0, size=200)
    null = rng.normal(0.0, 1.0, size=200)
    assert sign_flip_test(shifted) == sign_flip_test(shifted)
    assert sign_flip_test(shifted) < 0.001
    assert 0.05 < sign_flip_test(null, "two-sided") <= 1.0
    # Never exactly zero (Phipson & Smyth).
    assert sign_flip_test([5.0] * 100, n_resamples=1000) == pytest.approx(1 / 1001)


def test_four_fifths() -> None:
    r = four_fifths_ratio({"women": 0.4, "men": 0.6})
    assert r.ratio == pytest.approx(2 / 3) and r.lowest_group == "women" and r.highest_group == "men"
    assert four_fifths_ratio({"a": 0.0, "b": 0.0}).ratio == 1.0
    assert four_fifths_ratio({"a": 0.8, "b": 1.0}).ratio == pytest.approx(0.8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        four_fifths_ratio({"a": 1.2})


def test_holm_hand_values_and_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    mt = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(1)
    q = list(rng.uniform(0, 0.2, size=9))
    assert holm(q) == pytest.approx(list(mt.multipletests(q, method="holm")[1]))


def test_group_range_hand_values() -> None:
    # Ten matched sets of three groups, the middle group always the odd one out: under the
    # null each set puts its 0 in any of 3 places; only the 3 "all in one group" layouts
    # reach the observed range of 10, so p = 3 / 3**10.
    assert group_range_test([[1, 0, 1]] * 10) == pytest.approx(3 / 3**10)
    # Uninformative sets (one value for every group) change nothing.
    assert group_range_test([[1, 0, 1]] * 10 + [[1, 1, 1]] * 5 + [[0, 0, 0]] * 5) == pytest.approx(3 / 3**10)
    assert group_range_test([[1, 1, 1], [0.5, 0.5, 0.5]]) == 1.0
    # One informative set of three distinct scores: every arrangement has the same range.
    assert group_range_test([[0.1, 0.5, 0.9]]) == 1.0


def test_group_range_two_groups_is_mcnemar_and_sign_flip() -> None:
    table = [[1, 0]] * 7 + [[0, 1]] * 2 + [[1, 1]] * 5
    assert group_range_test(table) == pytest.approx(mcnemar_exact(7, 2, "two-sided").p_value)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 2))
    assert group_range_test(x) == pytest.approx(sign_flip_test(x[:, 0] - x[:, 1], "two-sided"))


def test_group_range_monte_carlo_agrees_with_exact_and_is_seeded() -> None:
    import evaluators.stats as st

    rng = np.random.default_rng(5)
    table = (rng.random((9, 4)) < 0.5).astype(float)
    table[:, 1] = 1.0
    exact = group_range_test(table)
    old = st.EXACT_ARRANGEMENTS_MAX
    try:
        st.EXACT_ARRANGEMENTS_MAX = 0
        mc = group_range_test(table, n_resamples=20_000)
        assert mc == group_range_test(table, n_resamples=20_000)
    finally:
        st.EXACT_ARRANGEMENTS_MAX = old
    assert mc == pytest.approx(exact, abs=0.01)


def test_group_range_has_its_level_under_the_null() -> None:
    # Exchangeable groups: p <= 0.05 about 5% of the time (not more).
    rng = np.random.default_rng(11)
    ps = [group_range_test(rng.normal(size=(15, 4)), n_resamples=400, seed=i) for i in range(300)]
    assert np.mean(np.asarray(ps) <= 0.05) <= 0.09


def test_group_range_refuses_bad_tables() -> None:
    with pytest.raises(ValueError, match="at least two groups"):
        group_range_test([[1.0], [0.0]])
    with pytest.raises(ValueError, match="finite"):
        group_range_test([[1.0, float("nan")]])


def test_exact_mcnemar_power_without_noise_is_a_binomial_tail() -> None:
    level = 0.05 / 48
    # with no discordance the other way every discordant pair is a worse one: reject from b = 10
    # (0.5^10 = 9.8e-4 <= level < 0.5^9)
    assert mcnemar_exact_power(64, 0.25, 0.0, level) == pytest.approx(float(sps.binom.sf(9, 64, 0.25)))
    assert mcnemar_exact_power(0, 0.25, 0.0, level) == 0.0
    with pytest.raises(ValueError, match="delta"):
        mcnemar_exact_power(10, 0.8, 0.2, level)


def test_exact_mcnemar_power_matches_simulation_with_noise() -> None:
    rng = np.random.default_rng(1)
    n, delta, q, level = 70, 0.2, 0.05, 0.001
    draws = rng.multinomial(n, [delta + q, q, 1 - delta - 2 * q], size=4000)
    simulated = np.mean([mcnemar_exact(int(b), int(c)).p_value <= level for b, c, _ in draws])
    assert mcnemar_exact_power(n, delta, q, level) == pytest.approx(simulated, abs=0.03)


def test_minimum_detectable_rise_is_where_power_reaches_its_target() -> None:
    level = 0.05 / 48
    mde = minimum_detectable_rise(64, 0.02, level, 0.8)
    assert mde is not None and 0.15 < mde < 0.3
    assert mcnemar_exact_power(64, mde, 0.02, level) >= 0.8 > mcnemar_exact_power(64, mde - 0.01, 0.02, level)
    # more probes, smaller gaps; too few probes for the level: none within reach
    assert minimum_detectable_rise(128, 0.02, level, 0.8) < mde  # type: ignore[operator]
    assert minimum_detectable_rise(6, 0.0, level, 0.8) is None
