"""`govern model prepare` and `govern train sft|dpo` on tiny models, and their one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aligner.artifact import AlignerToken
from governance.cli.aligner_cmds import model_app, train_app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _state(state_dir, monkeypatch):
    from governance.settings import get_settings

    monkeypatch.setenv("GOVERN_STATE_DIR", str(state_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_prepare_prints_digests_and_config() -> None:
    result = runner.invoke(model_app, ["prepare", "--model", "tiny-random-qwen2", "--no-register"])
    assert result.exit_code == 0, result.output
    assert "hidden_size: 64" in result.output and "num_kv_heads: 2" in result.output
    assert "weights:" in result.output


def test_prepare_unknown_model_is_one_line() -> None:
    result = runner.invoke(model_app, ["prepare", "--model", "gpt-17"])
    assert result.exit_code != 0
    assert "unknown model 'gpt-17'" in result.output


def test_train_sft_and_dpo(tmp_path) -> None:
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"Answer: {i}."}) + "\n" for i in range(4)))
    out = tmp_path / "tok"
    args = ["sft", "--data", str(sft), "--out", str(out), "--epochs", "1", "--model", "tiny-random-llama"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert AlignerToken.load(out).manifest.training_method == "sft"
    again = runner.invoke(train_app, args)
    assert again.exit_code != 0 and "already holds a token" in again.output

    dpo = tmp_path / "dpo.jsonl"
    dpo.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "No.", "rejected": "Sure."}) + "\n"
                           for i in range(4)))
    result = runner.invoke(train_app, ["dpo", "--data", str(dpo), "--out", str(tmp_path / "d"), "--tokens", "3",
                                       "--epochs", "1", "--model", "tiny-random-llama"])
    assert result.exit_code == 0, result.output
    assert AlignerToken.load(tmp_path / "d").manifest.n_tokens == 3


def test_bad_data_fails_before_loading_a_model(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "response": "y"}\n{"prompt": 3}\n')
    result = runner.invoke(train_app, ["sft", "--data", str(bad), "--out", str(tmp_path / "o"),
                                       "--model", "no-such-model"])
    assert result.exit_code != 0
    assert "bad.jsonl:2:" in result.output
    missing = runner.invoke(train_app, ["dpo", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert missing.exit_code != 0 and "no such file" in missing.output


def test_train_prints_its_report_and_names_a_bad_check(tmp_path) -> None:
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"Answer: {i}.\n\n— Acme Assistant"}) + "\n"
                           for i in range(12)))
    out = tmp_path / "tok"
    result = runner.invoke(train_app, ["sft", "--data", str(sft), "--out", str(out), "--epochs", "1",
                                       "--model", "tiny-random-llama"])
    assert result.exit_code == 0, result.output
    assert "splits: train 10, validation 1" in result.output and "chosen step" in result.output
    assert "house_format 0/1" in result.output or "house_format 1/1" in result.output
    assert (out / "training_report.json").is_file()
    bad = runner.invoke(train_app, ["sft", "--data", str(sft), "--out", str(tmp_path / "t2"), "--check", "tone",
                                    "--model", "tiny-random-llama"])
    assert bad.exit_code != 0 and "unknown check 'tone'" in bad.output


def test_the_cli_defaults_are_the_measured_recipes() -> None:
    """`govern train` defaults are aligner.training's SFT_DEFAULTS / DPO_DEFAULTS (docs/benchmarks.md)."""
    import inspect

    from aligner.training import DPO_DEFAULTS, SFT_DEFAULTS
    from governance.cli.aligner_cmds import dpo_cmd, sft_cmd

    names = {"n_tokens": "tokens"}
    for fn, recipe in ((sft_cmd, SFT_DEFAULTS), (dpo_cmd, DPO_DEFAULTS)):
        params = inspect.signature(fn).parameters
        for key, value in recipe.items():
            assert params[names.get(key, key)].default == value, (fn.__name__, key)
