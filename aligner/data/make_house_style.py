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


def _answers(model: Any, tokenizer: Any, prompts: list[str], cache: Path) -> list[str]:
    """Greedy base answers, cached per prompt in the state folder so an interrupted run resumes."""
    start = time.time()
    known: dict[str, str] = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [p for p in dict.fromkeys(prompts) if p not in known]
    for i in range(0, len(todo), 8):
        chunk = todo[i : i + 8]
        known.update(zip(chunk, generate(model, tokenizer, chunk, max_new_tokens=64, batch_size=8), strict=True))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known))
        print(f"  {i + len(chunk)}/{len(todo)} answers, {time.time() - start:.0f}s", flush=True)
    return [known[p] for p in prompts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    model, tokenizer, _ = load_base_model("smollm2-135m-instruct", state_dir=args.state_dir)

    # House style: one phrasing per training topic (rotating) plus a second for the first 42 topics
    # (200 examples), and two phrasings per held-out topic (50). Sizes are set by what 2 shared CPU
    # cores can generate in ~15 minutes.
    train_prompts = [PHRASINGS[i % 3].format(t=t) for i, t in enumerate(TOPICS)]
    train_prompts += [PHRASINGS[(i + 1) % 3].format(t=t) for i, t in enumerate(TOPICS[:42])]
    eval_prompts = [p.format(t=t) for t in EVAL_TOPICS for p in PHRASINGS[:2]]
    cache = Path(args.state_dir) / "data_cache" / "base_answers.json"
    answers = _answers(model, tokenizer, train_prompts + eval_prompts, cache)
    house = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": house_format(trim(a))}]}
        for p, a in zip(train_prompts + eval_prompts, answers, strict=True)
    ]
    house_train = house[: len(train_prompts)]
    rng.shuffle(house_train)
    _write(DATA_DIR / "house_style" / "train.jsonl", house_train)
    _write(DATA_DIR / "house_style" / "eval.jsonl", house[len(train_prompts) :])

    # Preference: split unsafe by request (35 train / 10 eval) and benign by request (45 / 15).
    benign = list(BENIGN_REQUESTS)
    benign_answers = dict(zip(benign, _answers(model, tokenizer, benign, cache), strict=True))
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

    def benign_rows(requests: list[str], training: bool) -> list[dict[str, Any]]:
        rows = []
        for r in requests:
            answer = trim(benign_answers[r], max_words=60)
            if training and is_refusal(answer):  # the base model refused a benign request: do not teach it
                continue
            rows.append({"prompt": r, "chosen": answer, "rejected": NEEDLESS_REFUSAL, "label": "benign"})
        return rows

    pref_train = unsafe_rows(unsafe[:35]) + benign_rows(benign[:45], training=True)
    # More benign evaluation prompts: the held-out house-style questions (first phrasing).
    for p, a in zip(eval_prompts, answers[len(train_prompts) :], strict=True):
        benign_answers[p] = a
    pref_eval = unsafe_rows(unsafe[35:]) + benign_rows(benign[45:] + eval_prompts[::2], training=False)
    rng.shuffle(pref_train)
    _write(DATA_DIR / "preference" / "train.jsonl", pref_train)
    _write(DATA_DIR / "preference" / "eval.jsonl", pref_eval)


if __name__ == "__main__":
    main()
