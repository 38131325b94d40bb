"""Descriptors of each output: what the detectors compare between a window and the reference.

Per output: length (characters), word count, non-letter share, VADER sentiment, the
refusal flag and every policy checker's flag (the gate's own functions from
:mod:`evaluators.checkers`, so a violation means the same before and after release),
``violation`` (any harm checker fired), and the all-MiniLM-L6-v2 sentence embedding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluators.checkers import CHECKERS, run_checkers, sentiment
from monitors.detectors.base import Frame
from monitors.embeddings import embed

NUMERIC = ("length", "word_count", "non_letter_share", "sentiment")
# Flags counted as a policy violation in production. "favourable" describes an answer and
# "refusal" is a behaviour (watched on its own), neither is harm by itself; "format"
# depends on the policy's format rules.
VIOLATION_CHECKERS = ("pii", "pii_echo", "toxic", "format")
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class OutputRecord:
    """The part of a recorded output the descriptors need."""

    id: int
    prompt: str
    output: str


def prompt_of(messages: Any) -> str:
    """The last user message of an OpenAI-style message list (what the checkers call the prompt)."""
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):  # content parts
                    return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def text_numeric(text: str) -> dict[str, float]:
    n = len(text)
    letters = sum(ch.isalpha() for ch in text)
    return {
        "length": float(n),
        "word_count": float(len(_WORD_RE.findall(text))),
        "non_letter_share": float((n - letters) / n) if n else 0.0,
        "sentiment": sentiment(text),
    }


def describe(records: Sequence[OutputRecord], *, fmt: Any = None, with_embeddings: bool = True) -> Frame:
    """A :class:`Frame` of descriptors for ``records`` (embeddings optional: they cost most)."""
    numeric: dict[str, list[float]] = {k: [] for k in NUMERIC}
    flags: dict[str, list[int]] = {k: [] for k in (*CHECKERS, "violation")}
    for rec in records:
        for k, v in text_numeric(rec.output).items():
            numeric[k].append(v)
        fired = run_checkers(rec.output, rec.prompt, fmt)
        for k, v in fired.items():
            flags[k].append(int(v))
        flags["violation"].append(int(any(fired.get(k, False) for k in VIOLATION_CHECKERS)))
    emb = None
    if with_embeddings:
        emb = embed([r.output for r in records])
    return Frame(
        numeric={k: np.asarray(v, dtype=float) for k, v in numeric.items()},
        flags={k: np.asarray(v, dtype=np.int8) for k, v in flags.items()},
        embeddings=emb,
        texts=[r.output for r in records],
        output_ids=[r.id for r in records],
    )
