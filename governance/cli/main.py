"""Entry point of ``govern``. Sub-apps live in their own modules; unbuilt commands say so."""

from __future__ import annotations

import importlib
import logging
import os
import warnings

import typer

from governance.cli.common import not_built
from governance.cli.services_cmds import db_app, services_app

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


def _optional(module: str, attr: str, name: str, help_text: str) -> None:
    """Register a sub-app from a module that may not exist yet in this release."""
    try:
        sub = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        sub = typer.Typer(help=f"{help_text} (not built yet)")

        @sub.callback(invoke_without_command=True)
        def _missing() -> None:
            not_built(f"govern {name}")

    app.add_typer(sub, name=name, help=help_text)


_optional("governance.cli.users_cmds", "users_app", "users", "Users and API keys.")
_optional("governance.cli.aligner_cmds", "model_app", "model", "Base models: prepare and cache.")
_optional("governance.cli.aligner_cmds", "train_app", "train", "Train Aligner tokens (SFT, DPO).")
_optional("governance.cli.gate_cmds", "gate_app", "gate", "Run and report the evaluation gate.")
_optional("governance.cli.review_cmds", "review_app", "review", "Approve or reject gated versions.")
_optional("governance.cli.deploy_cmds", "deployments_app", "deployments", "Create and inspect deployments.")
_optional("governance.cli.audit_cmds", "audit_app", "audit", "Audit log: keygen, export, verify.")


def _optional_commands(module: str, names: list[str]) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        mod = None
    for name in names:
        fn = getattr(mod, name.replace("-", "_") + "_cmd", None) if mod else None
        if fn is None:

            def _missing(_n: str = name) -> None:
                not_built(f"govern {_n}")

            _missing.__doc__ = "(not built yet)"
            app.command(name)(_missing)
        else:
            app.command(name)(fn)


_optional_commands("governance.cli.deploy_cmds", ["submit", "promote", "rollback", "freeze", "unfreeze"])
_optional_commands("governance.cli.process_cmds", ["api"])
_optional_commands("governance.cli.worker_cmds", ["worker", "beat"])
_optional_commands("governance.cli.serve_cmds", ["serve"])
_optional_commands("governance.cli.demo_cmds", ["demo"])


if __name__ == "__main__":
    app()
