"""The runner on a real (tiny, random) Llama with an Aligner adapter: per-row tokens in
shared batches, a zero-gate token equal to the base, a non-zero token that differs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from evaluators.runner import AlignerGenerator, generate_and_judge
from evaluators.suites.base import get_suite
from governance.policy import load_default_policy

STATE_DIR = Path(os.environ.get("ALIGNER_TEST_STATE_DIR", Path(__file__).resolve().parents[2] / "state"))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any, Any]:
    from aligner import attach
    from aligner.providers import load_base_model

    torch.set_num_threads(1)
    model, tokenizer, digests = load_base_model("tiny-random-llama", state_dir=STATE_DIR, dtype="float32")
    attach(model, base_digest=digests.weights).set_token(None)
    return model, tokenizer, digests


def _token(model: Any, digests: Any, gate: float, seed: int) -> Any:
    from aligner import get_adapter
    from aligner.artifact import AlignerToken

    shape = get_adapter(model).shape  # type: ignore[union-attr]
    g = torch.Generator().manual_seed(seed)
    return AlignerToken.create(
        torch.randn(1, shape.hidden_size, generator=g), torch.full((shape.num_layers, shape.num_heads), gate),
        base_model="tiny-random-llama", base_model_digest=digests.weights, tokenizer_digest=digests.tokenizer,
        training_method="manual", seed=seed,
    )


def test_zero_token_equals_base_and_gate_passes(tiny: tuple[Any, Any, Any], tmp_path: Path) -> None:
    model, tokenizer, digests = tiny
    policy, sha = load_default_policy()
    gen = AlignerGenerator(model, tokenizer, base_digest=digests.weights, max_new_tokens=8)
    zero = _token(model, digests, 0.0, 1)
    loud = _token(model, digests, 5.0, 2)
    suite = get_suite("reasoning")
    cases = {"reasoning": suite.load_cases()[:12]}
    prompts = [c.prompt for c in cases["reasoning"][:4]]
    # In one batch: zero-gate rows equal bare-base rows; a loud token changes its rows.
    out = gen.generate(prompts + prompts + prompts, [zero] * 4 + [None] * 4 + [loud] * 4)
    assert out[:4] == out[4:8]
    assert out[8:] != out[4:8]
    report = generate_and_judge(gen, policy=policy, policy_sha256=sha, candidate=zero, candidate_digest=zero.sha256,
                                state_dir=tmp_path, suites=[suite], cases=cases)
    assert report.passed
    again = generate_and_judge(gen, policy=policy, policy_sha256=sha, candidate=zero, candidate_digest=zero.sha256,
                               state_dir=tmp_path, suites=[suite], cases=cases)
    assert again.run["base_cached"] == ["reasoning"] and again.evidence_digest == report.evidence_digest
