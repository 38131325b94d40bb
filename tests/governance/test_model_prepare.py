"""`govern model prepare` registers the base model it prepared (idempotently)."""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from governance.cli.aligner_cmds import model_app
from governance.db import make_engine, unit_of_work
from governance.registry.models import BaseModel_

runner = CliRunner()


def test_prepare_registers_the_base_model_once(settings_env: None, database_url: str) -> None:
    first = runner.invoke(model_app, ["prepare", "--model", "tiny-random-llama"])
    assert first.exit_code == 0, first.output
    assert "registered as base model 'tiny-random-llama'" in first.output
    again = runner.invoke(model_app, ["prepare", "--model", "tiny-random-llama"])
    assert again.exit_code == 0, again.output
    engine = make_engine(database_url)
    with unit_of_work(engine) as s:
        rows = s.scalars(select(BaseModel_).where(BaseModel_.name == "tiny-random-llama")).all()
        assert len(rows) == 1
        assert rows[0].config["hidden_size"] > 0 and len(rows[0].weights_digest) == 64
    engine.dispose()
