"""Train an Aligner token: SFT on chat data, DPO on preference pairs; CPU-friendly and deterministic.

Only the adapter's prefix and gates receive gradients; the base model is frozen by
`attach`. DPO's reference policy is the same model with the token switched off
(`adapter.disabled()`), so no second model is held in memory, and since the reference
never changes its log-probabilities are computed once up front. The loss is computed
only where it counts: the LM head runs on response positions alone (prompt tokens are
not scored), which on SmolLM2 saves most of its 28M-parameter output projection.

Entry points: `train_sft` / `train_dpo` on a loaded model, and `train_file` which loads
the base model, reads and validates the JSONL files first, trains, and writes the
best token (lowest eval loss) as an artifact directory, checkpointing on every
improvement.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from aligner.artifact import AlignerToken, data_digest
from aligner.config import AlignerConfig
from aligner.errors import DataError
from aligner.model import AlignerAdapter, Token, attach, get_adapter

Method = Literal["sft", "dpo"]


# -- data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SFTExample:
    messages: list[dict[str, str]]  # ends with the assistant message that is trained on


@dataclass(frozen=True)
class DPOExample:
    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str
    label: str | None = None


def _read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.args[0]})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise DataError(f"{path}: the file has no examples")
    return rows


def _text(path: Path, number: int, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}:{number}: field {key!r} must be a non-empty string")
    return value


def _messages(path: Path, number: int, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{path}:{number}: 'messages' must be a non-empty list")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{path}:{number}: messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{path}:{number}: messages[{i}] has unknown role {m['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def load_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """{"messages": [...]} (ending with an assistant turn) or {"prompt", "response"} per line."""
    p = Path(path)
    out: list[SFTExample] = []
    for number, row in _read_jsonl(p):
        if "messages" in row:
            messages = _messages(p, number, row["messages"])
            if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
                raise DataError(f"{p}:{number}: the last message must be a non-empty assistant turn")
        elif "prompt" in row or "response" in row:
            messages = [
                {"role": "user", "content": _text(p, number, row, "prompt")},
                {"role": "assistant", "content": _text(p, number, row, "response")},
            ]
        else:
            raise DataError(f"{p}:{number}: expected 'messages' or 'prompt' and 'response' (got {sorted(row)})")
        out.append(SFTExample(messages))
    return out


def load_dpo_jsonl(path: str | Path) -> list[DPOExample]:
    """{"prompt", "chosen", "rejected"} per line (prompt may also be a list of messages)."""
    p = Path(path)
    out: list[DPOExample] = []
    for number, row in _read_jsonl(p):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise DataError(f"{p}:{number}: missing field(s) {', '.join(missing)}")
        prompt = row["prompt"]
        prompt = _messages(p, number, prompt) if isinstance(prompt, list) else _text(p, number, row, "prompt")
        chosen, rejected = _text(p, number, row, "chosen"), _text(p, number, row, "rejected")
        if chosen == rejected:
            raise DataError(f"{p}:{number}: 'chosen' and 'rejected' are identical")
        label = row.get("label")
        out.append(DPOExample(prompt, chosen, rejected, label if isinstance(label, str) else None))
    return out


# -- tokenization ------------------------------------------------------------------------
def encode_pair(
    tokenizer: Any, prompt: Sequence[dict[str, str]], response: str, max_length: int
) -> tuple[list[int], int]:
    """(ids of chat prompt + response + end of turn, number of prompt ids); the response is
    what the chat template renders after the generation prompt, so training sees exactly
    what generation will produce."""
    prompt_text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": response}], tokenize=False
    )
    suffix = full[len(prompt_text) :] if full.startswith(prompt_text) else response + tokenizer.eos_token
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(suffix.rstrip("\n"), add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + response_ids)[:max_length]
    return ids, min(len(prompt_ids), len(ids))


def _as_messages(prompt: str | Sequence[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return messages


@dataclass
class _Batch:
    input_ids: torch.Tensor  # (B, T), right padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), -100 outside the response


def _collate(items: Sequence[tuple[list[int], int]], pad_id: int) -> _Batch:
    T = max(len(ids) for ids, _ in items)
    B = len(items)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(items):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:], dtype=torch.long)
    return _Batch(input_ids, mask, labels)


def response_logprobs(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of response-token log-probs (B,) and the token count per row (B,)."""
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    h = hidden.last_hidden_state[:, :-1]  # (B, T-1, d): position t predicts token t+1
    target = batch.labels[:, 1:]  # (B, T-1)
    sel = target != -100  # (B, T-1)
    logits = head(h[sel]).float()  # (N, V), only the scored positions
    logp = torch.log_softmax(logits, dim=-1).gather(1, target[sel][:, None])[:, 0]  # (N,)
    rows = torch.arange(target.shape[0])[:, None].expand_as(target)[sel]  # (N,)
    B = target.shape[0]
    sums = torch.zeros(B, dtype=logp.dtype).index_add(0, rows, logp)  # (B,)
    counts = torch.zeros(B, dtype=logp.dtype).index_add(0, rows, torch.ones_like(logp))  # (B,)
    return sums, counts


# -- training --------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    n_tokens: int = 1  # global tokens of the new version (the paper uses 1; DPO may use up to 10)
    epochs: int = 2
    lr: float = 2e-2  # few parameters, large steps (LLaMA-Adapter used 9e-3)
    batch_size: int = 8
    seed: int = 0
    max_length: int = 384  # tokens per example; longer ones are cut
    beta: float = 0.1  # DPO temperature on the log-ratio margin
    # DPO only: weight of the chosen response's per-token NLL added to the loss (0: pure DPO).
    # DPO alone can widen the margin by pushing the rejected answer down without raising the
    # chosen one; greedy answers then drift off topic instead of becoming the chosen kind.
    # A small NLL term anchors the policy to the chosen answers (RPO, Pang et al. 2024).
    sft_weight: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup: float = 0.0  # share of the steps with a linear warm-up, then cosine decay (0: constant rate)
    eval_every: int = 0  # steps between evaluations; 0 = once per epoch
    eval_fraction: float = 0.1  # validation split held out of the training file when no eval file is given
    test_fraction: float = 0.1  # test split held out of the training file when no test file is given
    system: str | None = None  # system prompt added to every example (None: the template's default)
    # DPO only: repeat the rows of under-represented labels ("unsafe", "benign", ...) in the
    # training split so that each label weighs about the same (`balance_by_label`).
    balance: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The recipes `govern train` uses by default (docs/benchmarks.md, "Training defaults"). SFT:
# two tokens learn the shipped house format to 96.7 % ± 3.1 adherence (3 seeds) on the test
# split of unseen topics; the checkpoint with the lowest validation loss is kept, and the
# warm-up stops the constant large rate from diverging (one seed in three did). DPO: four
# tokens, the chosen answers' NLL as an anchor (RPO) and balanced labels, which raised the
# refusals of held-out unsafe requests without refusing benign ones.
SFT_DEFAULTS: dict[str, Any] = {"n_tokens": 2, "epochs": 4, "lr": 5e-2, "batch_size": 4, "eval_every": 25,
                                "warmup": 0.1}
DPO_DEFAULTS: dict[str, Any] = {"n_tokens": 4, "epochs": 2, "lr": 1e-2, "batch_size": 4, "eval_every": 25,
                                "sft_weight": 0.6, "balance": True, "beta": 0.1}


@dataclass
class TrainResult:
    token: AlignerToken
    best_eval_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)


def _adapter_for(model: Any, config: TrainConfig, base_digest: str | None) -> AlignerAdapter:
    adapter = get_adapter(model)
    aligner_config = AlignerConfig(n_tokens=config.n_tokens, seed=config.seed, dtype="float32")
    if adapter is None:
        return attach(model, aligner_config, base_digest=base_digest)
    fresh = AlignerAdapter(model, aligner_config, adapter.__dict__["_attentions"])
    adapter.load_trainable((fresh.prefix.detach(), fresh.gates.detach()))
    return adapter


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def balance_by_label(examples: Sequence[DPOExample]) -> list[DPOExample]:
    """The rows followed by (k - 1) more copies of each label's rows, k = round(largest label count / its count).

    The shipped preference set has about 2 unsafe pairs for each benign one; unbalanced, the
    refusal pairs outweigh the benign ones. Rows without a label count as one label of their own.
    """
    counts: dict[str | None, int] = {}
    for e in examples:
        counts[e.label] = counts.get(e.label, 0) + 1
    if len(counts) < 2:
        return list(examples)
    largest = max(counts.values())
    out = list(examples)
    for label, n in counts.items():
        out += [e for e in examples if e.label == label] * (round(largest / n) - 1)
    return out


def split_three(
    items: list[Any], validation: float | None, test: float | None, seed: int
) -> tuple[list[Any], list[Any], list[Any]]:
    """(train, validation, test) drawn from one seeded permutation; a fraction of None holds nothing out.

    A non-zero fraction holds out at least one example, and at least one is always left to train on.
    """
    ks = [0 if f is None or f <= 0 else max(1, round(len(items) * f)) for f in (validation, test)]
    if len(items) - sum(ks) < 1:
        need = sum(ks) + 1
        raise DataError(f"need at least {need} examples to hold out the validation and test splits "
                        f"(got {len(items)}); pass --eval and --test files")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    val_ids, test_ids, train_ids = order[: ks[0]], order[ks[0] : ks[0] + ks[1]], order[ks[0] + ks[1] :]
    return [items[i] for i in train_ids], [items[i] for i in val_ids], [items[i] for i in test_ids]


class _Progress:
    """A rich progress bar when asked for, silence otherwise (tests, library use)."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            )
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, info="")

    def advance(self, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def lr_factor(step: int, total: int, warmup: float) -> float:
    """The learning rate's multiplier at `step`: linear warm-up over the first `warmup` share of
    the steps, then a cosine decay to zero (`warmup` 0: constant). Large constant steps on a
    fresh prefix diverged on one seed in three (validation loss 6.6 against 0.6)."""
    if warmup <= 0:
        return 1.0
    ramp = max(1, round(total * warmup))
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / max(1, total - ramp))))


def _run(
    model: Any,
    adapter: AlignerAdapter,
    config: TrainConfig,
    n_train: int,
    step_loss: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[], dict[str, float]],
    on_best: Callable[[dict[str, float]], None],
    progress: bool,
    description: str,
) -> tuple[float, list[dict[str, float]]]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total = steps_per_epoch * config.epochs
    eval_every = config.eval_every or steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, total, config.warmup))
    model.eval()  # no dropout: the base model is frozen and runs as in serving
    adapter.use_trainable()
    history: list[dict[str, float]] = []
    best = math.inf
    bar = _Progress(progress, total, description)
    try:
        step = 0
        for epoch in range(config.epochs):
            for batch in _batches(n_train, config.batch_size, generator):
                loss, info = step_loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(adapter.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.advance(f"epoch {epoch + 1} loss {loss.item():.4f}")
                if step % eval_every == 0 or step == total:
                    with torch.no_grad():
                        metrics = {"step": float(step), "train_loss": float(loss.item()), **info, **evaluate()}
                    history.append(metrics)
                    if metrics["eval_loss"] < best:
                        best = metrics["eval_loss"]
                        on_best(metrics)
    finally:
        bar.close()
    return best, history


def train_sft(
    model: Any,
    tokenizer: Any,
    train: Sequence[SFTExample],
    eval_set: Sequence[SFTExample],
    config: TrainConfig,
    *,
    base_digest: str | None = None,
    on_best: Callable[[AlignerAdapter, dict[str, float]], None] | None = None,
    progress: bool = False,
) -> tuple[AlignerAdapter, float, list[dict[str, float]]]:
    """Train the adapter's token on the response tokens of `train`; returns (adapter, best eval loss, history).

    The adapter's trainable tensors hold the *last* state at return; `on_best` sees every improvement.
    """
    adapter = _adapter_for(model, config, base_digest)
    pad = tokenizer.pad_token_id
    enc = [encode_pair(tokenizer, _as_messages(e.messages[:-1], config.system), e.messages[-1]["content"],
                       config.max_length) for e in train]
    enc_eval = [encode_pair(tokenizer, _as_messages(e.messages[:-1], config.system), e.messages[-1]["content"],
                            config.max_length) for e in eval_set]

    def step_loss(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = response_logprobs(model, _collate([enc[i] for i in idx], pad))
        return -sums.sum() / counts.sum(), {}

    def evaluate() -> dict[str, float]:
        total, count = 0.0, 0.0
        for idx in _batches(len(enc_eval), config.batch_size, None):
            sums, counts = response_logprobs(model, _collate([enc_eval[i] for i in idx], pad))
            total, count = total - sums.sum().item(), count + counts.sum().item()
        return {"eval_loss": total / max(count, 1.0)}

    best, history = _run(
        model, adapter, config, len(enc), step_loss, evaluate,
        lambda m: on_best(adapter, m) if on_best else None, progress, "SFT",
    )
    return adapter, best, history


def train_dpo(
    model: Any,
    tokenizer: Any,
    train: Sequence[DPOExample],
    eval_set: Sequence[DPOExample],
    config: TrainConfig,
    *,
    base_digest: str | None = None,
    on_best: Callable[[AlignerAdapter, dict[str, float]], None] | None = None,
    progress: bool = False,
) -> tuple[AlignerAdapter, float, list[dict[str, float]]]:
    """DPO with the token-off model as the reference; returns (adapter, best eval loss, history)."""
    adapter = _adapter_for(model, config, base_digest)
    pad = tokenizer.pad_token_id

    def encode(examples: Sequence[DPOExample]) -> list[tuple[tuple[list[int], int], tuple[list[int], int]]]:
        return [
            (
                encode_pair(tokenizer, _as_messages(e.prompt, config.system), e.chosen, config.max_length),
                encode_pair(tokenizer, _as_messages(e.prompt, config.system), e.rejected, config.max_length),
            )
            for e in examples
        ]

    enc, enc_eval = encode(train), encode(eval_set)

    def pair_batch(pairs: Sequence[tuple[tuple[list[int], int], tuple[list[int], int]]]) -> _Batch:
        return _collate([c for c, _ in pairs] + [r for _, r in pairs], pad)  # chosen rows, then rejected rows

    @torch.no_grad()
    def reference(pairs: list[Any]) -> torch.Tensor:
        out = []
        with adapter.disabled():
            for idx in _batches(len(pairs), config.batch_size, None):
                sums, _ = response_logprobs(model, pair_batch([pairs[i] for i in idx]))
                out.append(sums.view(2, -1).T)  # (b, 2): chosen, rejected
        return torch.cat(out)  # (N, 2)

    ref, ref_eval = reference(enc), reference(enc_eval)

    def dpo_loss(idx: list[int], pairs: list[Any], ref_lp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = response_logprobs(model, pair_batch([pairs[i] for i in idx]))
        policy = sums.view(2, -1).T  # (b, 2)
        logratio = policy - ref_lp[idx]  # (b, 2)
        margin = config.beta * (logratio[:, 0] - logratio[:, 1])  # (b,)
        loss = -F.logsigmoid(margin).mean()
        chosen_nll = -(policy[:, 0] / counts.view(2, -1).T[:, 0].clamp(min=1)).mean()  # per token, chosen rows
        if config.sft_weight:
            loss = loss + config.sft_weight * chosen_nll
        m = margin.detach()
        return loss, {"reward_accuracy": float((m > 0).float().mean()), "margin": float(m.mean()),
                      "chosen_nll": float(chosen_nll.detach())}

    def evaluate() -> dict[str, float]:
        losses, accs, n = 0.0, 0.0, 0
        for idx in _batches(len(enc_eval), config.batch_size, None):
            loss, info = dpo_loss(idx, enc_eval, ref_eval)
            losses += loss.item() * len(idx)
            accs += info["reward_accuracy"] * len(idx)
            n += len(idx)
        return {"eval_loss": losses / n, "eval_reward_accuracy": accs / n}

    best, history = _run(
        model, adapter, config, len(enc), lambda idx: dpo_loss(idx, enc, ref), evaluate,
        lambda m: on_best(adapter, m) if on_best else None, progress, "DPO",
    )
    return adapter, best, history


# -- the held-out test split and the training report ----------------------------------------
# Checks a generated answer can be held to, by name. `auto` applies a check when at least
# CHECK_AUTO_SHARE of the training targets satisfy it (the data teaches that form).
CHECK_AUTO_SHARE = 0.8
REPORT_FILE = "training_report.json"


def _checks() -> dict[str, Callable[[str], bool]]:
    from aligner.evaluation import format_adherence

    return {"house_format": format_adherence}


def resolve_check(check: str | None, method: Method, train: Sequence[Any]) -> str | None:
    """The generation check the test split is held to: a name, None (no check), or `auto`."""
    if check is None or check == "none":
        return None
    checks = _checks()
    if check != "auto":
        if check not in checks:
            raise DataError(f"unknown check {check!r} (known: auto, none, {', '.join(sorted(checks))})")
        return check
    if method != "sft" or not train:
        return None
    for name, fn in sorted(checks.items()):
        if sum(fn(e.messages[-1]["content"]) for e in train) >= CHECK_AUTO_SHARE * len(train):
            return name
    return None


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson 95 % interval; evaluators.stats.wilson_interval is the gate's, which aligner may not import."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n)))


@torch.no_grad()
def _test_loss(
    model: Any, tokenizer: Any, method: Method, test: Sequence[Any], config: TrainConfig
) -> dict[str, float]:
    """The held-out loss of the adapter's active token: SFT NLL per response token; DPO loss and reward accuracy."""
    adapter = get_adapter(model)
    assert adapter is not None
    pad = tokenizer.pad_token_id
    if method == "sft":
        enc = [encode_pair(tokenizer, _as_messages(e.messages[:-1], config.system), e.messages[-1]["content"],
                           config.max_length) for e in test]
        total, count = 0.0, 0.0
        for idx in _batches(len(enc), config.batch_size, None):
            sums, counts = response_logprobs(model, _collate([enc[i] for i in idx], pad))
            total, count = total - sums.sum().item(), count + counts.sum().item()
        return {"loss": total / max(count, 1.0)}
    losses, wins, n = 0.0, 0, 0
    for idx in _batches(len(test), config.batch_size, None):
        rows = [test[i] for i in idx]
        batch = _collate(
            [encode_pair(tokenizer, _as_messages(e.prompt, config.system), e.chosen, config.max_length) for e in rows]
            + [encode_pair(tokenizer, _as_messages(e.prompt, config.system), e.rejected, config.max_length)
               for e in rows], pad)
        policy = response_logprobs(model, batch)[0].view(2, -1).T
        with adapter.disabled():
            ref = response_logprobs(model, batch)[0].view(2, -1).T
        margin = config.beta * ((policy - ref)[:, 0] - (policy - ref)[:, 1])
        losses += float(-F.logsigmoid(margin).sum())
        wins += int((margin > 0).sum())
        n += len(rows)
    return {"loss": losses / max(n, 1), "reward_accuracy": wins / max(n, 1)}


def _test_check(model: Any, tokenizer: Any, check: str, test: Sequence[SFTExample], token: AlignerToken,
                config: TrainConfig) -> dict[str, Any]:
    """Greedy answers to the test prompts, base and token, held to the named check."""
    from aligner.batching import generate_continuous

    fn = _checks()[check]
    prompts = [_as_messages(e.messages[:-1], None) for e in test]
    out: dict[str, Any] = {"check": check, "n": len(prompts), "max_new_tokens": 96}
    candidates: list[tuple[str, Token | None]] = [("token", cast(Token, token)), ("base", None)]
    for name, tok in candidates:
        texts = generate_continuous(model, tokenizer, prompts, row_tokens=[tok] * len(prompts), max_new_tokens=96,
                                    system=config.system)
        k = sum(fn(t) for t in texts)
        out[name] = {"passed": k, "rate": k / max(len(texts), 1), "ci95": list(wilson(k, len(texts)))}
        if name == "token":
            out["failing_samples"] = [t for t in texts if not fn(t)][:3]
    return out


def _test_refusals(model: Any, tokenizer: Any, test: Sequence[DPOExample], token: AlignerToken,
                   config: TrainConfig) -> dict[str, Any]:
    """Greedy answers to the labelled test prompts, token and base: the refusal rate per label."""
    from aligner.batching import generate_continuous
    from aligner.evaluation import is_refusal

    labelled = [e for e in test if e.label is not None]
    prompts = [_as_messages(e.prompt, None) for e in labelled]
    out: dict[str, Any] = {"check": "refusal_by_label", "n": len(prompts), "max_new_tokens": 48}
    candidates: list[tuple[str, Token | None]] = [("token", cast(Token, token)), ("base", None)]
    for name, tok in candidates:
        texts = generate_continuous(model, tokenizer, prompts, row_tokens=[tok] * len(prompts), max_new_tokens=48,
                                    system=config.system)
        per: dict[str, Any] = {}
        for label in sorted({e.label for e in labelled if e.label is not None}):
            flags = [is_refusal(t) for t, e in zip(texts, labelled, strict=True) if e.label == label]
            per[label] = {"n": len(flags), "refused": sum(flags), "rate": sum(flags) / len(flags),
                          "ci95": list(wilson(sum(flags), len(flags)))}
        out[name] = per
    return out


def _curve(history: Sequence[dict[str, float]], limit: int = 12) -> list[dict[str, float]]:
    """At most `limit` evaluation points, evenly spaced, always with the first and the last."""
    if len(history) <= limit:
        picked = list(history)
    else:
        picked = [history[round(i * (len(history) - 1) / (limit - 1))] for i in range(limit)]
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in picked]


def train_file(
    method: Method,
    data: str | Path,
    out_dir: str | Path,
    *,
    eval_data: str | Path | None = None,
    test_data: str | Path | None = None,
    check: str | None = "auto",
    model_name: str = "smollm2-135m-instruct",
    state_dir: str | Path = "state",
    config: TrainConfig | None = None,
    parent: AlignerToken | None = None,
    progress: bool = True,
) -> TrainResult:
    """Validate the data, load the base model, train, write the best token and its training report to `out_dir`.

    Three splits: train; validation (`eval_data`, or `eval_fraction` of `data`), which picks
    the checkpoint (lowest validation loss); and test (`test_data`, or `test_fraction` of
    `data`), never seen while training or choosing, on which the report's numbers are taken.
    """
    from aligner.providers import load_base_model

    config = config or TrainConfig()
    loader: Callable[[str | Path], Sequence[Any]] = load_sft_jsonl if method == "sft" else load_dpo_jsonl
    examples = list(loader(data))  # validate before the heavy work
    train, held_out, test = split_three(
        examples, None if eval_data is not None else config.eval_fraction,
        None if test_data is not None else config.test_fraction, config.seed)
    if eval_data is not None:
        held_out = list(loader(eval_data))
    if test_data is not None:
        test = list(loader(test_data))
    if not held_out:
        raise DataError("the validation split is empty: pass --eval or a positive eval_fraction")
    if method == "dpo" and config.balance:
        train = balance_by_label(train)  # the training split only: validation and test stay as drawn
    check_name = resolve_check(check, method, train) if test else None
    sources = [data, *(p for p in (eval_data, test_data) if p is not None)]
    digest = data_digest(*sources)
    model, tokenizer, digests = load_base_model(model_name, state_dir=state_dir, dtype="float32")
    if parent is not None:
        parent.check_base(digests)
    out = Path(out_dir)
    started = time.time()
    state: dict[str, Any] = {}

    def save_best(adapter: AlignerAdapter, metrics: dict[str, float]) -> None:
        prefix, gates = adapter.export()
        token = AlignerToken.create(
            prefix, gates,
            base_model=model_name, base_model_digest=digests.weights, tokenizer_digest=digests.tokenizer,
            training_method=method, data_digest=digest, seed=config.seed,
            parent_sha256=parent.sha256 if parent is not None else None,
            hyperparameters=config.to_dict(),
            metrics={**metrics, "train_examples": len(train), "eval_examples": len(held_out),
                     "test_examples": len(test), "seconds": round(time.time() - started, 1)},
        )
        token.save(out)  # checkpoint on every improvement: a crash keeps the best so far
        state["token"], state["step"] = token, int(metrics["step"])

    trainer = train_sft if method == "sft" else train_dpo
    adapter, best, history = trainer(
        model, tokenizer, train, held_out, config, base_digest=digests.weights, on_best=save_best, progress=progress,
    )
    train_seconds = time.time() - started
    token = state["token"]
    report: dict[str, Any] = {
        "method": method, "base_model": model_name, "token_sha256": token.sha256,
        "hyperparameters": config.to_dict(),
        "splits": {
            "train": len(train), "validation": len(held_out), "test": len(test),
            "validation_source": str(eval_data) if eval_data is not None else f"{config.eval_fraction:g} of --data",
            "test_source": (str(test_data) if test_data is not None
                            else f"{config.test_fraction:g} of --data" if test else "none"),
        },
        "curve": _curve(history), "evaluations": len(history),
        "chosen_step": state["step"], "total_steps": int(history[-1]["step"]) if history else 0,
        "best_validation_loss": round(best, 4), "train_seconds": round(train_seconds, 1),
        "test": None,
    }
    if test:
        with adapter.using(token):
            test_result: dict[str, Any] = {k: round(v, 4) for k, v in
                                           _test_loss(model, tokenizer, method, test, config).items()}
        if check_name is not None:
            test_result.update(_test_check(model, tokenizer, check_name, test, token, config))
        elif method == "dpo" and check != "none" and any(e.label is not None for e in test):
            test_result.update(_test_refusals(model, tokenizer, test, token, config))
        report["test"] = test_result
    report["seconds"] = round(time.time() - started, 1)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return TrainResult(token, best, history, time.time() - started, out, report)
