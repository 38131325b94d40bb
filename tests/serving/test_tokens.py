"""Token verification: only bytes with the named digest, bound to this base model, are served."""

from __future__ import annotations

from typing import Any

import pytest

from serving.tokens import ServedToken, TokenVerificationError, verify_artifact
from tests.serving.helpers import make_token


def test_a_good_token_verifies(tiny: tuple[Any, Any, Any]) -> None:
    _, _, digests = tiny
    token = make_token(digests, seed=1)
    data = token.to_bytes()
    got = verify_artifact(data, expected_sha256=token.sha256, base_digest=digests.weights, shape=digests.shape)
    assert tuple(got.prefix.shape) == tuple(token.prefix.shape)


def test_digest_mismatch_is_refused(tiny: tuple[Any, Any, Any]) -> None:
    _, _, digests = tiny
    token = make_token(digests, seed=1)
    with pytest.raises(TokenVerificationError, match="digest mismatch"):
        verify_artifact(token.to_bytes(), expected_sha256="0" * 64, base_digest=digests.weights, shape=digests.shape)


def test_token_of_another_base_model_is_refused(tiny: tuple[Any, Any, Any]) -> None:
    _, _, digests = tiny
    token = make_token(digests, seed=1, base_digest="a" * 64)
    with pytest.raises(TokenVerificationError, match="base model"):
        verify_artifact(
            token.to_bytes(), expected_sha256=token.sha256, base_digest=digests.weights, shape=digests.shape
        )


def test_garbage_is_refused(tiny: tuple[Any, Any, Any]) -> None:
    import hashlib

    _, _, digests = tiny
    data = b"not a token at all"
    with pytest.raises(TokenVerificationError, match="does not parse"):
        verify_artifact(
            data, expected_sha256=hashlib.sha256(data).hexdigest(), base_digest=digests.weights, shape=digests.shape
        )


def test_fingerprint_names_version_and_generation() -> None:
    assert ServedToken(12, "x", 7).fingerprint == "govern-v12-g7"
    assert ServedToken(None, None, 3).fingerprint == "govern-vbase-g3"
