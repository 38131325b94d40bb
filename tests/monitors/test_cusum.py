"""CUSUM arithmetic against values computed by hand, calibration against simulation, registry errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitors.detectors import UnknownDetector, build_detector, cusum, detector_class, known_kinds
from monitors.detectors.base import DetectorContext, Frame, Reference
from monitors.detectors.sequential import BernoulliCusum, resolve_kind


def test_bernoulli_llr_by_hand() -> None:
    llr = cusum.bernoulli_llr(np.array([1, 0]), 0.01, 0.05)
    assert llr[0] == pytest.approx(math.log(5.0))
    assert llr[1] == pytest.approx(math.log(0.95 / 0.99))


def test_gaussian_llr_by_hand() -> None:
    # (mu1 - mu0) / sigma^2 * (x - (mu0 + mu1) / 2) = 2/4 * (3 - 1) = 1.0
    assert cusum.gaussian_llr(np.array([3.0]), 0.0, 2.0, 2.0)[0] == pytest.approx(1.0)
    assert cusum.gaussian_llr(np.array([1.0]), 0.0, 2.0, 2.0)[0] == pytest.approx(0.0)


def test_statistics_example_kl_and_lorden_delay() -> None:
    # STATISTICS.md: 0.5% -> 10% at ARL 10^4: KL = 0.209 nats, about 44 samples
    kl = cusum.bernoulli_kl(0.10, 0.005)
    assert kl == pytest.approx(0.209, abs=0.001)
    assert cusum.lorden_delay(1e4, kl) == pytest.approx(44, abs=0.5)


def test_cusum_known_sequence_restarts_after_alarm() -> None:
    llr = np.array([1.0, 1.0, -0.5, 2.0, 1.0, -5.0, 0.5]).reshape(-1, 1)
    run = cusum.cusum_block(llr, np.zeros(1), h=3.0)
    # S: 1, 2, 1.5, 3.5 (alarm -> 0), 1, 0 (floored), 0.5
    assert run.alarms == 1 and run.first_alarm == 3
    assert run.peak == pytest.approx(3.5)
    assert run.stats[0] == pytest.approx(0.5)


def test_cusum_state_carries_across_blocks() -> None:
    a = cusum.cusum_block(np.array([[1.0], [1.0]]), np.zeros(1), h=3.0)
    b = cusum.cusum_block(np.array([[1.5]]), a.stats, h=3.0)
    assert a.alarms == 0 and b.alarms == 1


def test_p0_floor_and_design_p1() -> None:
    assert cusum.estimate_p0(0, 10_000) == cusum.P0_FLOOR
    assert cusum.estimate_p0(10, 1000) == pytest.approx(10.5 / 1001)
    assert cusum.design_p1(0.01, 0.10) == 0.10
    assert cusum.design_p1(0.2, 0.10) == pytest.approx(0.9)  # policy p1 under p0: a multiple of p0, capped
    assert cusum.design_p1(0.01, None) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="between 0 and n"):
        cusum.estimate_p0(5, 3)


@pytest.mark.parametrize("p0,p1,arl", [(0.01, 0.05, 2000.0), (0.02, 0.10, 5000.0)])
def test_calibrated_h_gives_the_arl(p0: float, p1: float, arl: float) -> None:
    sampler = cusum.bernoulli_sampler(p0, p1)
    h = cusum.calibrate_cusum(sampler, arl, key=f"test|{p0}|{p1}")
    assert 0 < h < 2 * math.log(arl)
    # independent random numbers: the false-alarm rate is at or under the budget, within 25%
    rate = cusum.alarm_rate_cusum(sampler, h, streams=256, length=int(300 * arl / 256) + 1, seed=99)
    measured_arl = 1.0 / rate
    assert arl * 0.85 <= measured_arl <= arl * 1.5


def test_calibration_is_deterministic_and_cached(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sampler = cusum.bernoulli_sampler(0.03, 0.2)
    h1 = cusum.calibrate_cusum(sampler, 500.0, key="det", cache_dir=tmp_path)
    cusum._CACHE.clear()
    assert list(tmp_path.glob("cusum-h-*.json"))
    assert cusum.calibrate_cusum(sampler, 500.0, key="det", cache_dir=tmp_path) == h1


def test_bernoulli_detector_state_round_trip() -> None:
    ref = Reference(frame=Frame(flags={"violation": np.zeros(500, dtype=np.int8)}))
    det = BernoulliCusum("policy_violations", type("C", (), {"arl": 1000.0, "p1": 0.2, "rollback": True})())
    ctx = DetectorContext()
    win = Frame(flags={"violation": np.zeros(50, dtype=np.int8)})
    first = det.run(reference=ref, window=win, state=None, context=ctx)
    assert first.verdict == "ok" and first.state is not None
    import json

    state = json.loads(json.dumps(first.state))  # what detector_states keeps
    second = det.run(reference=ref, window=Frame(flags={"violation": np.ones(3, dtype=np.int8)}), state=state,
                     context=ctx)
    assert second.verdict == "drift"
    assert second.details["p0"] == pytest.approx(cusum.P0_FLOOR)
    assert second.rollback_allowed


def test_registry_unknown_kind_lists_known() -> None:
    with pytest.raises(UnknownDetector, match="known: cusum_bernoulli"):
        detector_class("psi")
    assert {"cusum_bernoulli", "cusum_gaussian", "cusum_embeddings", "evidently", "evidently_embeddings",
            "expectations"} <= set(known_kinds())


def test_policy_names_map_to_detectors() -> None:
    assert resolve_kind("policy_violations", "cusum")[0] == "cusum_bernoulli"
    assert resolve_kind("embedding_topics", "cusum")[0] == "cusum_embeddings"
    assert resolve_kind("refusals", "cusum", ["refusal"]) == ("cusum_bernoulli", {"flag": "refusal"})
    assert resolve_kind("descriptor_means", "cusum")[0] == "cusum_gaussian"
    cfg = type("C", (), {"kind": "evidently", "rollback": False})()
    assert build_detector("descriptors", cfg).kind == "evidently"
