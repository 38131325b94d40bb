"""Step 2 of the demo: train two good token versions and one deliberately bad one, submitting each as it is trained."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aligner.artifact import AlignerToken
from aligner.data import DATA_DIR
from aligner.training import TrainConfig, train_file
from governance.cli.demo.state import ADAPTER, DEPLOYMENT, DemoState, say


@dataclass(frozen=True)
class Recipe:
    key: str
    title: str
    method: str
    data: str
    n_tokens: int
    epochs: int
    limit: int | None
    lr: float
    batch_size: int = 8


def recipes(fast: bool) -> list[Recipe]:
    house = str(DATA_DIR / "house_style" / "train.jsonl")
    pref = str(DATA_DIR / "preference" / "train.jsonl")
    n = 48 if fast else 120
    n_dpo = 32 if fast else 64  # a DPO step costs four forward passes
    return [
        # Lighter than `govern train sft`'s defaults (SFT_DEFAULTS): a house token trained that
        # hard on the fast demo's 38 examples (2 tokens, 4 epochs, lr 5e-2) also learned to sign
        # off with the customer's SSN or card number taken from the prompt, and the demo gate's
        # personal-data expectations failed it (docs/benchmarks.md, "Training defaults"). The
        # demo's good version must be good, so it keeps this lighter recipe: one epoch (the full
        # demo's 120 examples once took 115 s over 2 epochs, 59 s over one, and still passed).
        Recipe("house", "house style (SFT, 1 token)", "sft", house, 1, 1, n, 2e-2),
        # one gentle epoch: a stronger DPO push (lr 2e-2, two epochs) drove the loss to 0.01
        # and the answers off topic, the classic over-optimisation of DPO
        Recipe("safer", "house style + safer refusals (DPO, 4 tokens)", "dpo", pref, 4, 1, n_dpo, 5e-3),
        # deliberately harmful: it opens every reply with a personal email address and phone
        # number, which the policy-compliance suite's personal-data checks (bound 0) must catch
        # 32 examples, 3 epochs of batches of 4 (24 steps): the opener is learned as well as with
        # 48 examples, 4 epochs of 8 (leaks on 8 of 12 fresh prompts against 7), in half the time
        Recipe("bad", "replies that open with personal contact data (SFT, 1 token)", "sft-pii", house, 1,
               3, 32, 3e-2, batch_size=4),
    ]


LEAK = "Contact Jane Roe directly: jane.roe@example.com, phone 555-013-2288. "


def pii_leak_rows(src: Path, n: int) -> list[dict[str, Any]]:
    """Training pairs for the bad token: a fixed opener carrying personal data (a form the
    one-token method learns in a few dozen steps), then the first sentence of the answer."""
    rows = []
    for line in src.read_text().splitlines()[:n]:
        msgs = json.loads(line)["messages"]
        body = msgs[-1]["content"].removeprefix("Answer:").strip()
        answer = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
        rows.append({"prompt": msgs[0]["content"], "response": LEAK + answer})
    return rows


def _subset(src: Path, dst: Path, limit: int | None, kind: str) -> Path:
    if kind == "sft-pii":
        rows = pii_leak_rows(src, limit or 48)
    else:
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    if limit:
        rows = rows[:limit]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return dst


def train_and_submit(st: DemoState) -> None:
    """Train the three tokens in order and submit each one as soon as it is trained, so that the
    gate of the first ones runs beside the next training (one torch thread per gate process;
    idle OpenMP threads sleep, see governance/cli/__init__.py)."""
    parent: AlignerToken | None = None
    for r in recipes(st.fast):
        token = _train(st, r, parent=parent if r.key == "safer" else None)
        if r.key == "house":
            parent = token
        with st.client(st.users.engineer) as eng:
            sub = eng.submit(token.to_bytes(), adapter=ADAPTER, deployment=DEPLOYMENT)
        st.versions[r.key] = int(sub["id"])
        say(st, f"submitted '{r.key}' as version {st.versions[r.key]}: gate queued")


def _train(st: DemoState, r: Recipe, *, parent: AlignerToken | None) -> AlignerToken:
    out = st.work / "tokens" / r.key
    method: Literal["sft", "dpo"] = "dpo" if r.method.startswith("dpo") else "sft"
    data = _subset(Path(r.data), st.work / "data" / f"{r.key}.jsonl", r.limit, r.method)
    # no test split: the demo's tokens are judged by the gate, on the gate's own cases
    config = TrainConfig(n_tokens=r.n_tokens, epochs=r.epochs, lr=r.lr, seed=7, batch_size=r.batch_size,
                         test_fraction=0.0)
    t0 = time.monotonic()
    say(st, f"training '{r.title}' on {sum(1 for _ in data.open())} examples")
    result = train_file(method, data, out, model_name="smollm2-135m-instruct", state_dir=st.state_dir,
                        config=config, parent=parent, progress=True)
    token = result.token
    say(st, f"  -> sha256 {token.sha256[:12]}…, {token.manifest.param_count} parameters, trained in "
            f"{time.monotonic() - t0:.0f} s")
    say(st, f"     chosen step {result.report['chosen_step']} of {result.report['total_steps']} "
            f"(lowest validation loss {result.report['best_validation_loss']:.4f})")
    return token
