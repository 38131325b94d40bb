"""The embedding-topic detector: the novelty score (T^2 + SPE) by hand, its out-of-sample
calibration on the reference, and the Bernoulli CUSUM on the novelty flag across windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from governance.monitoring.models import MonitorReference
from monitors.detectors import DetectorContext, Frame, Reference, build_detector, cusum
from monitors.detectors.base import novelty_score, t2_spe
from monitors.detectors.sequential import NOVELTY_ALPHA, fit_novelty
from monitors.reference import finish, novelty_model, to_reference, whiten

D = 48
# a decaying spectrum, like sentence embeddings: a few strong directions, a long weak tail
SPECTRUM = np.r_[np.linspace(3.0, 1.0, 6), np.full(D - 6, 0.3)]


class _Cfg:
    def __init__(self, **kw: object) -> None:
        self.kind, self.rollback, self.arl = "cusum", False, 10_000.0
        self.p1, self.shift_sigmas, self.threshold = None, None, None
        self.__dict__.update(kw)


def _clean(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, D)) * SPECTRUM


def _topic(rng: np.random.Generator, n: int) -> np.ndarray:
    """A new topic: outputs move along weak directions of the reference (little mean shift
    inside its top components), as a new subject does in a sentence-embedding space."""
    out = _clean(rng, n)
    out[:, 20:30] += 0.9
    return out


def _reference(rng: np.random.Generator, n: int = 1000, *, with_model: bool = True) -> Reference:
    emb = _clean(rng, n)
    mean, comps, proj = whiten(emb)
    return Reference(frame=Frame(flags={"violation": np.zeros(len(proj), dtype=np.int8)}, embeddings=proj),
                     emb_mean=mean, emb_components=comps,
                     emb_novelty=novelty_model(emb, comps) if with_model else None)


def _window(emb: np.ndarray) -> Frame:
    return Frame(flags={"violation": np.zeros(len(emb), dtype=np.int8)}, embeddings=emb)


def test_t2_and_spe_by_hand() -> None:
    # two whitened components along e1 and e2 (scaled rows: only the directions count)
    comps = np.array([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    t2, spe = t2_spe(np.array([[2.0, 1.0, 3.0], [1.0, 1.0, 1.0]]), comps,
                     centre=np.array([0.0, 0.0, 0.0]), sd=np.array([2.0, 1.0]))
    assert t2.tolist() == pytest.approx([(2 / 2) ** 2 + 1.0, (1 / 2) ** 2 + 1.0])  # [2, 1.25]
    assert spe.tolist() == pytest.approx([9.0, 1.0])  # the third coordinate, squared
    score = novelty_score(np.array([[2.0, 1.0, 3.0]]), comps, centre=np.zeros(3), sd=np.array([2.0, 1.0]),
                          t2_scale=4.0, spe_scale=3.0)
    assert score.tolist() == pytest.approx([max(2 / 4, 9 / 3)])
    # a zero SPE scale leaves SPE out (embeddings inside the components' span)
    only_t2 = novelty_score(np.array([[2.0, 1.0, 3.0]]), comps, centre=np.zeros(3), sd=np.array([2.0, 1.0]),
                            t2_scale=4.0, spe_scale=0.0)
    assert only_t2.tolist() == pytest.approx([0.5])


def test_novelty_model_is_fitted_on_one_half_and_scores_the_other() -> None:
    rng = np.random.default_rng(0)
    emb = _clean(rng, 400)
    _, comps, proj = whiten(emb)
    model = novelty_model(emb, comps)
    fit, held = emb[0::2], emb[1::2]
    assert np.allclose(model["centre"], fit.mean(axis=0))
    assert len(model["scores"]) == len(proj) == len(held)
    expected = novelty_score(held, comps, centre=np.asarray(model["centre"]), sd=np.asarray(model["sd"]),
                             t2_scale=model["t2_scale"], spe_scale=model["spe_scale"])
    assert np.allclose(model["scores"], expected, atol=1e-5)
    json.dumps(model)  # stored in monitor_references.stats


def test_flag_rate_is_calibrated_out_of_sample() -> None:
    """The clean flag rate of new outputs matches (k + 1) / (m + 1) from the held-out rows."""
    rates, p0s = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        ref = _reference(rng)
        model, note = fit_novelty(ref)
        assert model is not None and note is None and model.score_name == "t2+spe"
        assert model.p0 == pytest.approx((model.flagged + 1) / (model.rows + 1))
        assert abs(model.flagged / model.rows - NOVELTY_ALPHA) < 0.01
        rates.append(model.flags(ref, _clean(rng, 20_000)).mean())
        p0s.append(model.p0)
    # averaged over references the rate agrees with p0 (exchangeability), within noise
    assert np.mean(rates) == pytest.approx(np.mean(p0s), rel=0.12)


def test_clean_stream_rarely_alarms_and_a_topic_shift_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref = _reference(rng)
    det = build_detector("embedding_topics", _Cfg())
    assert det.kind == "cusum_embeddings"
    ctx = DetectorContext(write_report=False, cache_dir=tmp_path)
    state, alarms = None, 0
    for _ in range(40):  # 2,000 clean samples at ARL 10^4
        res = det.run(reference=ref, window=_window(_clean(rng, 50)), state=state, context=ctx)
        assert res.verdict in {"ok", "drift"} and res.details["score"] == "t2+spe"
        alarms += res.details["alarms"]
        state = json.loads(json.dumps(res.state))  # what detector_states keeps
    assert alarms <= 1
    # 30% of outputs on the new topic: caught within a few windows
    shifted = 0
    while shifted < 4:
        shifted += 1
        mix = _clean(rng, 50)
        share = rng.random(50) < 0.3
        mix[share] = _topic(rng, int(share.sum()))
        res = det.run(reference=ref, window=_window(mix), state=state, context=ctx)
        state = res.state
        if res.verdict == "drift":
            break
    assert res.verdict == "drift", f"no alarm after {shifted} shifted windows"
    assert res.details["window_rate"] > 0.2 and res.rollback_allowed is False
    # the threshold keeps the budget: h is the one calibrated for this p0, p1 and reference size
    k, m = (int(v) for v in res.details["reference_flagged"].split("/"))
    assert res.details["p0"] == pytest.approx((k + 1) / (m + 1))
    assert res.details["lorden_delay_design"] == pytest.approx(
        cusum.lorden_delay(1e4, cusum.bernoulli_kl(res.details["p1"], res.details["p0"])))


def test_state_carries_across_windows() -> None:
    rng = np.random.default_rng(4)
    ref = _reference(rng)
    det = build_detector("embedding_topics", _Cfg(threshold=50.0))  # no alarm: compare statistics
    ctx = DetectorContext(write_report=False)
    emb = _topic(rng, 60)
    whole = det.run(reference=ref, window=_window(emb), state=None, context=ctx)
    first = det.run(reference=ref, window=_window(emb[:25]), state=None, context=ctx)
    second = det.run(reference=ref, window=_window(emb[25:]),
                     state=json.loads(json.dumps(first.state)), context=ctx)
    assert whole.state is not None and second.state is not None
    assert second.state["s"] == pytest.approx(whole.state["s"])
    assert second.state["samples_total"] == 60
    # a state made with other parameters (e.g. the old multivariate CUSUM's) restarts at zero
    old = {"components": 10, "shift_norm": 0.5, "h": 9.0, "arl": 1e4, "s": [1.0] * 10}
    fresh = det.run(reference=ref, window=_window(_clean(rng, 1)), state=old, context=ctx)
    assert fresh.state is not None and len(fresh.state["s"]) == 1 and "components" not in fresh.state


def test_old_reference_without_the_model_falls_back_to_t2_with_a_note() -> None:
    rng = np.random.default_rng(5)
    ref = _reference(rng, with_model=False)
    det = build_detector("embedding_topics", _Cfg(arl=1000.0))
    res = det.run(reference=ref, window=_window(_clean(rng, 50)), state=None,
                  context=DetectorContext(write_report=False))
    assert res.verdict in {"ok", "drift"}
    assert res.details["score"] == "t2" and "predates" in res.details["note"]
    no_emb = Reference(frame=Frame(flags={"violation": np.zeros(100, dtype=np.int8)}))
    res = det.run(reference=no_emb, window=_window(_clean(rng, 50)), state=None,
                  context=DetectorContext(write_report=False))
    assert res.verdict == "inconclusive" and res.details["reason"] == "no embeddings"


def test_a_built_reference_stores_the_model_and_an_old_one_loads() -> None:
    rng = np.random.default_rng(6)
    emb = _clean(rng, 200)
    row = MonitorReference(deployment_id=1, version_id=1, sample_size=200,
                           stats={"flags": {"violation": [0] * 200}, "numeric": {}})
    finish(row, emb, gate_summary=None)
    stats = json.loads(json.dumps(row.stats))  # a JSON column
    assert len(stats["emb_novelty"]["scores"]) == len(stats["emb_proj"]) == 100
    row.stats = stats
    ref = to_reference(row)
    model, note = fit_novelty(ref)
    assert model is not None and model.score_name == "t2+spe" and note is None
    del stats["emb_novelty"]
    row.stats = stats
    old, note = fit_novelty(to_reference(row))
    assert old is not None and old.score_name == "t2" and note


def test_an_uncertain_clean_rate_raises_the_threshold() -> None:
    """Drawing each simulated stream's clean rate from Beta(k + 1, m - k) (the exceedance law of
    an order-statistic threshold) costs a higher h than a rate known exactly, and keeps the
    budget on average over that law."""
    k, m = 24, 500
    p0 = (k + 1) / (m + 1)
    p1 = 5 * p0
    known = cusum.calibrate_cusum(cusum.bernoulli_sampler(p0, p1), 500.0, key="test-known")
    uncertain = cusum.calibrate_cusum(cusum.bernoulli_sampler(p0, p1, rate_beta=(k + 1.0, m - k)), 500.0,
                                      key="test-beta")
    assert uncertain > known
    rate = cusum.alarm_rate_cusum(cusum.bernoulli_sampler(p0, p1, rate_beta=(k + 1.0, m - k)), uncertain,
                                  streams=512, length=600, seed=7)
    assert rate <= 1.0 / (500.0 * 0.7)  # at most the budget, within simulation noise
