"""Token artifacts: round trips, canonical digest, and clear refusals of bad input."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from aligner import BaseModelMismatchError, InvalidTokenError, attach
from aligner.artifact import MANIFEST_FILE, TOKEN_FILE, AlignerToken

D, L, H = 64, 2, 4
DIGEST = "a" * 64


def _token(n: int = 2, seed: int = 0, **kw) -> AlignerToken:
    g = torch.Generator().manual_seed(seed)
    return AlignerToken.create(
        torch.randn(n, D, generator=g),
        torch.randn(L, H, generator=g),
        base_model="tiny-random-llama",
        base_model_digest=DIGEST,
        tokenizer_digest="b" * 64,
        training_method="sft",
        data_digest="c" * 64,
        seed=seed,
        **kw,
    )


def test_bytes_round_trip_and_digest_is_canonical() -> None:
    tok = _token()
    data = tok.to_bytes()
    back = AlignerToken.from_bytes(data)
    assert torch.equal(back.prefix, tok.prefix) and torch.equal(back.gates, tok.gates)
    assert back.manifest == tok.manifest
    assert back.sha256 == tok.sha256 == __import__("hashlib").sha256(data).hexdigest()
    assert back.to_bytes() == data
    # The archive is a plain safetensors file too.
    from safetensors.torch import load

    assert set(load(data)) == {"prefix", "gates"}
    assert tok.manifest.param_count == 2 * D + L * H


def test_digest_depends_on_content_only(tmp_path) -> None:
    tok = _token()
    a = tok.save(tmp_path / "a")
    b = tok.save(tmp_path / "b")
    (a / TOKEN_FILE).touch()  # timestamps do not matter
    assert AlignerToken.load(a).sha256 == AlignerToken.load(b).sha256 == tok.sha256
    assert _token(seed=1).sha256 != tok.sha256
    assert json.loads((a / MANIFEST_FILE).read_text())["sha256"] == tok.sha256


def test_single_file_and_directory_forms(tmp_path) -> None:
    tok = _token(parent_sha256="d" * 64, metrics={"eval_loss": 1.5})
    f = tok.save(tmp_path / "v1.safetensors")
    d = tok.save(tmp_path / "dir")
    assert (d / TOKEN_FILE).read_bytes() == f.read_bytes()
    loaded = AlignerToken.load(d)
    assert loaded.manifest.parent_sha256 == "d" * 64 and loaded.manifest.metrics == {"eval_loss": 1.5}


def test_bf16_token_round_trip() -> None:
    tok = _token(dtype="bfloat16")
    back = AlignerToken.from_bytes(tok.to_bytes())
    assert back.prefix.dtype == torch.bfloat16 and back.manifest.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b"x" * 40, "truncated|not a safetensors"),
        (lambda b: b[:-4], "not a valid safetensors"),
        (lambda b: struct.pack("<Q", 2) + b"{}", "no manifest"),
    ],
)
def test_malformed_bytes_are_refused(mangle, message) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        AlignerToken.from_bytes(mangle(_token().to_bytes()))


def _rewrite(tok: AlignerToken, prefix=None, gates=None, manifest=None) -> bytes:
    from aligner.artifact import _encode_archive

    m = manifest if manifest is not None else tok.manifest
    return _encode_archive(m, {"prefix": tok.prefix if prefix is None else prefix,
                               "gates": tok.gates if gates is None else gates})


def test_non_finite_and_wrong_shapes_are_refused() -> None:
    tok = _token()
    bad = tok.prefix.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(InvalidTokenError, match="non-finite"):
        AlignerToken.from_bytes(_rewrite(tok, prefix=bad))
    with pytest.raises(InvalidTokenError, match="gates have shape"):
        AlignerToken.from_bytes(_rewrite(tok, gates=torch.zeros(L + 1, H)))


def test_bad_manifests_are_refused() -> None:
    import dataclasses

    tok = _token()
    with pytest.raises(InvalidTokenError, match="param_count"):
        AlignerToken.from_bytes(_rewrite(tok, manifest=dataclasses.replace(tok.manifest, param_count=7)))
    with pytest.raises(InvalidTokenError, match="format_version"):
        AlignerToken.from_bytes(_rewrite(tok, manifest=dataclasses.replace(tok.manifest, format_version=99)))


def test_directory_with_edited_manifest_is_refused(tmp_path) -> None:
    d = _token().save(tmp_path / "t")
    data = json.loads((d / MANIFEST_FILE).read_text())
    data["seed"] = 99
    (d / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(InvalidTokenError, match="disagrees"):
        AlignerToken.load(d)
    with pytest.raises(InvalidTokenError, match=r"no token\.safetensors"):
        AlignerToken.load(tmp_path)


def test_validate_against_without_a_model() -> None:
    tok = _token()
    tok.validate_against({"hidden_size": D, "num_layers": L, "num_heads": H})
    tok.validate_against({"hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H}, DIGEST)
    with pytest.raises(BaseModelMismatchError, match="hidden_size is 64 in the token but 576"):
        tok.validate_against({"hidden_size": 576, "num_layers": L, "num_heads": H})
    with pytest.raises(BaseModelMismatchError, match="trained on base model"):
        tok.validate_against({"hidden_size": D, "num_layers": L, "num_heads": H}, "f" * 64)


def test_token_onto_a_model(tiny_llama) -> None:
    model, _, digests = tiny_llama
    adapter = attach(model, base_digest=digests.weights)
    prefix, gates = adapter.export()
    tok = AlignerToken.create(
        prefix, gates, base_model="tiny-random-llama", base_model_digest=digests.weights,
        tokenizer_digest=digests.tokenizer, training_method="manual",
    )
    tok.check_base(digests)
    adapter.set_token(tok)
    other = AlignerToken.create(
        prefix, gates, base_model="x", base_model_digest="e" * 64,
        tokenizer_digest=digests.tokenizer, training_method="manual",
    )
    with pytest.raises(BaseModelMismatchError, match="trained on base model"):
        other.check_base(digests)
    with pytest.raises(BaseModelMismatchError, match="trained on base model"):
        adapter.set_token(other)
