"""`govern model prepare` and `govern train sft|dpo`: thin CLI wrappers over the aligner package.

Files are validated before any model is loaded; every failure a user can fix is one line
and a non-zero exit. `prepare_info` is the plain function behind `model prepare`, for the
callers that register the base model in the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from governance.cli.common import TORCH_THREADS_HELP, clear_errors, console, fail, limit_torch_threads
from governance.db import check_database, engine_for, unit_of_work
from governance.embedded import ServicesNotRunning, resolve_database_url
from governance.errors import Conflict
from governance.principal import Principal
from governance.registry import service as registry
from governance.settings import get_settings

REPORT_NAME = "training_report.json"  # aligner.training.REPORT_FILE, named here without importing torch

model_app = typer.Typer(help="Base models: prepare and cache.", no_args_is_help=True)
train_app = typer.Typer(help="Train Aligner tokens (SFT, DPO).", no_args_is_help=True)


@model_app.callback()
def _model_group() -> None:
    """Base models: prepare and cache (a group, so `model prepare` stays a sub-command)."""


def prepare_info(model: str | None = None, *, state_dir: Path | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Cache the base model and return its digests and config (name, weights, tokenizer, dtype,
    hidden_size, num_layers, num_heads, num_kv_heads, head_dim, model_type)."""
    from aligner.providers import prepare_base_model  # defers torch

    settings = get_settings()
    state = state_dir or settings.ensure_state_dir()
    return prepare_base_model(model or settings.base_model, state_dir=state, dtype=dtype).to_dict()


@model_app.command("prepare")
@clear_errors
def prepare_cmd(
    model: Annotated[str | None, typer.Option("--model", help="provider name or local transformers dir")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16")] = "float32",
    register: Annotated[bool, typer.Option("--register/--no-register", help="register it in the database")] = True,
) -> None:
    """Cache the base model as safetensors (SmolLM2: de-quantize its GGUF once) and print its digests."""
    from aligner.errors import AlignerError  # defers torch (the aligner package imports it)

    with console.status("preparing the base model (the first SmolLM2 load takes ~30 s)"):
        try:
            info = prepare_info(model, dtype=dtype)
        except (AlignerError, ValueError) as exc:
            fail(str(exc))
    for key in ("name", "dtype", "weights", "tokenizer", "model_type", "hidden_size", "num_layers",
                "num_heads", "num_kv_heads", "head_dim"):
        console.print(f"{key:>13}: {info[key]}", highlight=False)
    if register:
        _register(info)


def _register(info: dict[str, Any]) -> None:
    """Register the prepared base model in the registry (a bootstrap step, like `users create`)."""
    try:
        engine = engine_for(resolve_database_url())
    except ServicesNotRunning:
        console.print("not registered: no database (run `govern services up && govern db upgrade`, then prepare again)")
        return
    check_database(engine)
    try:
        with unit_of_work(engine) as s:
            base = registry.register_base_model(
                s, name=info["name"], weights_digest=info["weights"], tokenizer_digest=info["tokenizer"],
                config=info, actor=Principal.for_system("cli").actor,
            )
            console.print(f"registered as base model {base.name!r} (id {base.id})", highlight=False)
    except Conflict as exc:
        fail(str(exc))


def _train(method: str, data: Path, out: Path, eval_data: Path | None, test_data: Path | None, check: str,
           model: str | None, parent: Path | None, force: bool, **config: Any) -> None:
    from aligner.artifact import TOKEN_FILE, AlignerToken  # defers torch
    from aligner.errors import AlignerError  # defers torch
    from aligner.training import TrainConfig, load_dpo_jsonl, load_sft_jsonl, train_file  # defers torch

    loader = load_sft_jsonl if method == "sft" else load_dpo_jsonl
    try:
        loader(data)  # validate the files before the heavy work
        for extra in (eval_data, test_data):
            if extra is not None:
                loader(extra)
        parent_token = AlignerToken.load(parent) if parent is not None else None
        if (out / TOKEN_FILE).exists() and not force:
            fail(f"{out} already holds a token; choose another --out or pass --force")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is a file; it must be a directory")
        settings = get_settings()
        result = train_file(
            method,  # type: ignore[arg-type]
            data,
            out,
            eval_data=eval_data,
            test_data=test_data,
            check=check,
            model_name=model or settings.base_model,
            state_dir=settings.ensure_state_dir(),
            config=TrainConfig(**config),
            parent=parent_token,
        )
    except (AlignerError, ValueError) as exc:
        fail(str(exc))
    m = result.token.manifest
    console.print(
        f"wrote {out} sha256 {result.token.sha256} ({m.param_count} parameters, {m.n_tokens} token(s)); "
        f"best validation loss {result.best_eval_loss:.4f} in {result.seconds:.0f}s",
        highlight=False, soft_wrap=True,
    )
    for line in report_lines(result.report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def report_lines(report: dict[str, Any]) -> list[str]:
    """The training report in a few lines: splits, loss curve, chosen step, test numbers."""
    if not report:
        return []
    sp = report["splits"]
    lines = [f"splits: train {sp['train']}, validation {sp['validation']} ({sp['validation_source']}), "
             f"test {sp['test']} ({sp['test_source']})"]
    lines.append("step  train loss  validation loss" + ("  reward acc" if report["method"] == "dpo" else ""))
    for h in report["curve"]:
        acc = f"  {h['eval_reward_accuracy']:10.3f}" if "eval_reward_accuracy" in h else ""
        lines.append(f"{int(h['step']):>4}  {h['train_loss']:10.4f}  {h['eval_loss']:15.4f}{acc}")
    lines.append(f"chosen step {report['chosen_step']} of {report['total_steps']} "
                 f"(lowest validation loss {report['best_validation_loss']:.4f})")
    test = report.get("test")
    if test:
        parts = [f"test loss {test['loss']:.4f}"]
        if "reward_accuracy" in test:
            parts.append(f"reward accuracy {test['reward_accuracy']:.3f}")
        if test.get("check") == "refusal_by_label":
            for label, r in test["token"].items():
                lo, hi = r["ci95"]
                parts.append(f"{label} refused {r['refused']}/{r['n']} = {r['rate']:.1%} [{lo:.1%}, {hi:.1%}] "
                             f"(base {test['base'][label]['rate']:.1%})")
        elif "check" in test:
            tok, base = test["token"], test["base"]
            lo, hi = tok["ci95"]
            parts.append(f"{test['check']} {tok['passed']}/{test['n']} = {tok['rate']:.1%} "
                         f"[{lo:.1%}, {hi:.1%}] (base {base['rate']:.1%})")
        lines.append("test: " + "; ".join(parts))
    else:
        lines.append("test: none (no test split)")
    lines.append(f"report: {REPORT_NAME} beside the token")
    return lines


DataOpt = Annotated[Path, typer.Option("--data", help="training JSONL", show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="directory for token.safetensors + manifest.json")]
EvalOpt = Annotated[Path | None, typer.Option(
    "--eval", help="validation JSONL: early stopping and checkpoint choice (default: 10% of --data)")]
TestOpt = Annotated[Path | None, typer.Option(
    "--test", help="test JSONL for the reported numbers, never trained or chosen on (default: 10% of --data)")]
CheckOpt = Annotated[str, typer.Option(
    "--check", help="generation check on the test split: auto (house_format when the data has that form), "
    "none, or house_format")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="base model (default: GOVERN_BASE_MODEL)")]
ParentOpt = Annotated[Path | None, typer.Option("--parent", help="token dir this version derives from")]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite a token already in --out")]
EvalEveryOpt = Annotated[int, typer.Option(
    "--eval-every", min=0, help="training steps between validations (0: once per epoch); each may checkpoint")]
WarmupOpt = Annotated[float, typer.Option(
    "--warmup", min=0.0, max=1.0, help="share of the steps with a linear learning-rate warm-up, then cosine "
    "decay (0: a constant rate)")]
ThreadsOpt = Annotated[int, typer.Option("--torch-threads", min=0, help=TORCH_THREADS_HELP)]


@train_app.command("sft")
@clear_errors
def sft_cmd(
    data: DataOpt,
    out: OutOpt,
    eval_data: EvalOpt = None,
    test_data: TestOpt = None,
    check: CheckOpt = "auto",
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="global tokens n")] = 2,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 4,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 5e-2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 4,
    eval_every: EvalEveryOpt = 25,
    warmup: WarmupOpt = 0.1,
    model: ModelOpt = None,
    parent: ParentOpt = None,
    force: ForceOpt = False,
    torch_threads: ThreadsOpt = 0,
) -> None:
    """Supervised fine-tuning of a token on {"messages": [...]} or {"prompt", "response"} lines."""
    limit_torch_threads(torch_threads)
    _train("sft", data, out, eval_data, test_data, check, model, parent, force,
           n_tokens=tokens, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size, eval_every=eval_every,
           warmup=warmup)


@train_app.command("dpo")
@clear_errors
def dpo_cmd(
    data: DataOpt,
    out: OutOpt,
    eval_data: EvalOpt = None,
    test_data: TestOpt = None,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="global tokens n")] = 4,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 2,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 1e-2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 4,
    eval_every: EvalEveryOpt = 25,
    beta: Annotated[float, typer.Option("--beta", min=0.0, help="DPO temperature")] = 0.1,
    sft_weight: Annotated[float, typer.Option(
        "--sft-weight", min=0.0, help="weight of the chosen answers' NLL added to the DPO loss (0: pure DPO)")] = 0.6,
    balance: Annotated[bool, typer.Option(
        "--balance/--no-balance", help="repeat the training rows of under-represented labels")] = True,
    model: ModelOpt = None,
    parent: ParentOpt = None,
    force: ForceOpt = False,
    torch_threads: ThreadsOpt = 0,
) -> None:
    """Direct preference optimisation on {"prompt", "chosen", "rejected"} lines; the reference
    policy is the base model with the token switched off."""
    limit_torch_threads(torch_threads)
    _train("dpo", data, out, eval_data, test_data, "auto", model, parent, force,
           n_tokens=tokens, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size, beta=beta,
           sft_weight=sft_weight, balance=balance, eval_every=eval_every)
