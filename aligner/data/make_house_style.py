"""Regenerate the shipped data sets from the hand-written prompts (run once; output is committed).

    python -m aligner.data.make_house_style [--state-dir state]

House style: SmolLM2's own greedy answers, trimmed to at most ~45 words of whole sentences
and put into the house format ("Answer: ..." + "— Acme Assistant"), so only the form
differs from what the base model says. Preference: unsafe requests get a short refusal as
"chosen" and a compliant opening (no actual instructions) as "rejected"; benign requests
get the base model's own answer as "chosen" and a needless refusal as "rejected".
Deterministic: greedy decoding, fixed orders, a seeded shuffle.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import torch

from aligner.data import DATA_DIR
from aligner.data.prompts import (
    BENIGN_REQUESTS,
    EVAL_TOPICS,
    PHRASINGS,
    TOPICS,
    UNSAFE_PHRASINGS,
    UNSAFE_REQUESTS,
)
from aligner.evaluation import house_format, is_refusal
from aligner.generation import generate
from aligner.providers import load_base_model

SEED = 20231209
REFUSALS = [
    "I can't help with that. It could seriously harm people, and I won't provide instructions for it.",
    "I'm sorry, but I can't assist with that request because it is dangerous and illegal.",
    "I can't help with this. If someone is at risk, please contact local emergency services.",
    "I won't help with that, since it could hurt others. I'm happy to help with something safe instead.",
]
NEEDLESS_REFUSAL = "I'm sorry, but I can't help with that request."


def trim(answer: str, max_words: int = 45) -> str:
    """Whole sentences of a base answer, markdown removed, at most ~max_words words."""
    text = re.sub(r"[*#`_>]+", "", answer)
    text = re.sub(r"^\s*(?:[-•]|\d+[.)])\s*", "", text, flags=re.MULTILINE)
    text = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+", text)
    out: list[str] = []
    for s in sentences:
        if out and len(" ".join([*out, s]).split()) > max_words:
            break
        out.append(s)
    body = " ".join(out).strip()
    if len(body.split()) > max_words + 15:  # one run-on sentence: cut at a word boundary
        body = " ".join(body.split()[:max_words]).rstrip(",;:") + "."
    if body and body[-1] not in ".!?":
        body += "."
    return body


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


def _answers(model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
    start = time.time()
    out: list[str] = []
    for i in range(0, len(prompts), 16):
        out.extend(generate(model, tokenizer, prompts[i : i + 16], max_new_tokens=80, batch_size=16))
        print(f"  {len(out)}/{len(prompts)} answers, {time.time() - start:.0f}s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default="state")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    model, tokenizer, _ = load_base_model("smollm2-135m-instruct", state_dir=args.state_dir)

    # House style: 2 of the 3 phrasings per training topic (~300), 2 per held-out topic (50).
    train_prompts = [p.format(t=t) for t in TOPICS for p in rng.sample(PHRASINGS, 2)]
    eval_prompts = [p.format(t=t) for t in EVAL_TOPICS for p in PHRASINGS[:2]]
    benign = list(BENIGN_REQUESTS)
    answers = _answers(model, tokenizer, train_prompts + eval_prompts + benign)
    house = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": house_format(trim(a))}]}
        for p, a in zip(train_prompts + eval_prompts, answers, strict=False)
    ]
    house_train = house[: len(train_prompts)]
    rng.shuffle(house_train)
    _write(DATA_DIR / "house_style" / "train.jsonl", house_train)
    _write(DATA_DIR / "house_style" / "eval.jsonl", house[len(train_prompts) :])

    # Preference: split unsafe by request (35 train / 10 eval) and benign by request (45 / 15).
    benign_answers = dict(zip(benign, answers[len(train_prompts) + len(eval_prompts) :], strict=True))
    unsafe = list(UNSAFE_REQUESTS)
    rng.shuffle(unsafe)
    rng.shuffle(benign)

    def unsafe_rows(requests: list[str]) -> list[dict[str, Any]]:
        rows = []
        for r in requests:
            for phrasing in UNSAFE_PHRASINGS:
                rows.append({
                    "prompt": phrasing.format(r=r),
                    "chosen": rng.choice(REFUSALS),
                    "rejected": f"Sure! Here is how to {r}. First, you will need to",
                    "label": "unsafe",
                })
        return rows

    def benign_rows(requests: list[str]) -> list[dict[str, Any]]:
        rows = []
        for r in requests:
            answer = trim(benign_answers[r], max_words=60)
            if is_refusal(answer):  # the base model refused a benign request: skip, do not teach it
                continue
            rows.append({"prompt": r, "chosen": answer, "rejected": NEEDLESS_REFUSAL, "label": "benign"})
        return rows

    pref_train = unsafe_rows(unsafe[:35]) + benign_rows(benign[:45])
    # More benign evaluation prompts: the held-out house-style questions (first phrasing).
    for p, a in zip(eval_prompts[::2], answers[len(train_prompts) :: 2], strict=False):
        benign_answers[p] = a
    pref_eval = unsafe_rows(unsafe[35:]) + benign_rows(benign[45:] + eval_prompts[::2])
    rng.shuffle(pref_train)
    _write(DATA_DIR / "preference" / "train.jsonl", pref_train)
    _write(DATA_DIR / "preference" / "eval.jsonl", pref_eval)


if __name__ == "__main__":
    main()
