"""`govern serve`: registered, documented, and a missing service key is one clear line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from governance.cli.main import app


def test_serve_is_registered_with_its_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--deployment", "--port", "--host", "--model", "--max-batch", "--queue-size"):
        assert option in result.output


def test_serve_without_a_service_key_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from governance.settings import reset_settings_cache

    monkeypatch.delenv("GOVERN_API_KEY", raising=False)
    monkeypatch.setenv("GOVERN_STATE_DIR", str(tmp_path))
    reset_settings_cache()
    try:
        result = CliRunner().invoke(app, ["serve", "--deployment", "prod"])
    finally:
        reset_settings_cache()
    assert result.exit_code == 2
    assert "GOVERN_API_KEY" in result.output
