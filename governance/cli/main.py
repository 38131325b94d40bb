"""Entry point of ``govern``: one Typer app that registers every sub-app and command directly.

Registration imports each command module at the top, so a module that fails to import
fails ``govern`` loudly instead of hiding a command. The command modules keep their own
heavy imports (torch, transformers) inside the commands, so ``govern --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import warnings

import typer

from governance.cli.aligner_cmds import model_app, train_app
from governance.cli.audit_cmds import audit_app
from governance.cli.demo_cmds import demo_cmd
from governance.cli.deploy_cmds import (
    deployments_app,
    freeze_cmd,
    promote_cmd,
    rollback_cmd,
    submit_cmd,
    unfreeze_cmd,
)
from governance.cli.dossier_cmds import dossier_app
from governance.cli.gate_cmds import gate_app
from governance.cli.process_cmds import api_cmd
from governance.cli.review_cmds import review_app
from governance.cli.rollout_cmds import rollout_app
from governance.cli.serve_cmds import serve_cmd
from governance.cli.services_cmds import db_app, services_app
from governance.cli.users_cmds import users_app
from governance.cli.worker_cmds import beat_cmd, worker_cmd

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub is reachable; never try
warnings.filterwarnings("ignore", module="platformdirs")
logging.getLogger("pgserver").setLevel(logging.WARNING)

app = typer.Typer(
    name="govern",
    help="Governance for Aligner-token aligned LLMs: gate, review, promote, monitor, roll back, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users", help="Users and API keys.")
app.add_typer(model_app, name="model", help="Base models: prepare and cache.")
app.add_typer(train_app, name="train", help="Train Aligner tokens (SFT, DPO).")
app.add_typer(gate_app, name="gate", help="Run and report the evaluation gate.")
app.add_typer(review_app, name="review", help="Approve or reject gated versions.")
app.add_typer(deployments_app, name="deployments", help="Create and inspect deployments.")
app.add_typer(rollout_app, name="rollout", help="Shadow and canary rollouts of a candidate version.")
app.add_typer(audit_app, name="audit", help="Audit log: keygen, export, verify.")
app.add_typer(dossier_app, name="dossier", help="Evidence dossiers of a version or a deployment period.")

app.command("submit")(submit_cmd)
app.command("promote")(promote_cmd)
app.command("rollback")(rollback_cmd)
app.command("freeze")(freeze_cmd)
app.command("unfreeze")(unfreeze_cmd)
app.command("api")(api_cmd)
app.command("worker")(worker_cmd)
app.command("beat")(beat_cmd)
app.command("serve")(serve_cmd)
app.command("demo")(demo_cmd)


if __name__ == "__main__":
    app()
