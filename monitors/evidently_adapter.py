"""The one module that imports Evidently (0.7: ``Report``/``Dataset``/``DataDefinition`` API).

It produces the drift report between a reference and a window, for the descriptors and
the embeddings, and saves its HTML next to the check. Evidently's *defaults* are not a
decision rule for small windows (DESIGN.md: its fixed 0.1 Wasserstein threshold flagged
97.5% of clean 50-output windows), so every metric here names a size-aware test
(Kolmogorov-Smirnov p-values for numeric descriptors, the two-proportion z-test for 0/1
flags, the absolute text-content classifier for raw text, which is fast) and the
decisions are taken by our detectors at a stated false-alarm budget; the report is the
evidence a person reads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NUMERIC_METHOD = "ks"
# Evidently's own "fisher_exact" refuses samples of unequal size; its two-proportion z-test
# is size-aware too. (The decision uses Fisher's exact test, in monitors.detectors.reports.)
FLAG_METHOD = "z"
TEXT_METHOD = "abs_text_content_drift"
EMBEDDINGS_NAME = "embedding"


@dataclass
class DriftReport:
    """Per-column values from Evidently (p-values for ks/fisher, a score for text, a distance for embeddings)."""

    values: dict[str, float] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    html_path: str | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _frame(numeric: dict[str, np.ndarray], flags: dict[str, np.ndarray], emb: np.ndarray | None,
           texts: list[str] | None) -> pd.DataFrame:
    data: dict[str, Any] = {k: np.asarray(v, dtype=float) for k, v in numeric.items()}
    data.update({k: np.asarray(v, dtype=int).astype(str) for k, v in flags.items()})
    if emb is not None:
        for j in range(emb.shape[1]):
            data[f"{EMBEDDINGS_NAME}_{j}"] = emb[:, j]
    if texts is not None:
        data["text"] = list(texts)
    return pd.DataFrame(data)


def drift_report(
    *,
    ref_numeric: dict[str, np.ndarray],
    cur_numeric: dict[str, np.ndarray],
    ref_flags: dict[str, np.ndarray] | None = None,
    cur_flags: dict[str, np.ndarray] | None = None,
    ref_embeddings: np.ndarray | None = None,
    cur_embeddings: np.ndarray | None = None,
    ref_texts: list[str] | None = None,
    cur_texts: list[str] | None = None,
    html_path: Path | None = None,
) -> DriftReport:
    """Run one Evidently report (reference vs. current) and save its HTML when a path is given.

    Flags that never vary in either set are left out (Fisher's test has nothing to say and
    Evidently refuses one-valued columns). Text drift needs a vocabulary; when the texts are
    too few or too uniform for it, the text metric is dropped and the reason recorded.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import DistanceDriftMethod

    started = time.perf_counter()
    ref_flags, cur_flags = ref_flags or {}, cur_flags or {}
    flags = [k for k in ref_flags if k in cur_flags
             and len(set(np.asarray(ref_flags[k]).tolist()) | set(np.asarray(cur_flags[k]).tolist())) > 1]
    numeric = [k for k in ref_numeric if k in cur_numeric]
    use_emb = ref_embeddings is not None and cur_embeddings is not None
    use_text = bool(ref_texts) and bool(cur_texts)
    emb_cols = [f"{EMBEDDINGS_NAME}_{j}" for j in range(ref_embeddings.shape[1])] if use_emb else []  # type: ignore[union-attr]

    def datasets(with_text: bool) -> tuple[Any, Any]:
        ref_df = _frame({k: ref_numeric[k] for k in numeric}, {k: ref_flags[k] for k in flags},
                        ref_embeddings if use_emb else None, ref_texts if with_text else None)
        cur_df = _frame({k: cur_numeric[k] for k in numeric}, {k: cur_flags[k] for k in flags},
                        cur_embeddings if use_emb else None, cur_texts if with_text else None)
        definition = DataDefinition(
            numerical_columns=numeric + emb_cols,
            categorical_columns=flags,
            text_columns=["text"] if with_text else [],
            embeddings={EMBEDDINGS_NAME: emb_cols} if use_emb else None,
        )
        return (Dataset.from_pandas(cur_df, data_definition=definition),
                Dataset.from_pandas(ref_df, data_definition=definition))

    metrics: list[Any] = [ValueDrift(column=c, method=NUMERIC_METHOD) for c in numeric]
    metrics += [ValueDrift(column=c, method=FLAG_METHOD) for c in flags]
    methods = {**{c: NUMERIC_METHOD for c in numeric}, **{c: FLAG_METHOD for c in flags}}
    if use_emb:
        # the mean-distance method without bootstrap is instant; the decision is ours
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDINGS_NAME,
                                       drift_method=DistanceDriftMethod(bootstrap=False)))
        methods[EMBEDDINGS_NAME] = "euclidean distance of means"
    report = DriftReport(methods=methods)
    attempts = [True, False] if use_text else [False]
    snapshot = None
    for with_text in attempts:
        chosen = [*metrics, ValueDrift(column="text", method=TEXT_METHOD)] if with_text else metrics
        try:
            snapshot = Report(chosen).run(*datasets(with_text))
            if with_text:
                methods["text"] = TEXT_METHOD
            break
        except ValueError as exc:  # e.g. "no terms remain" from the text vectoriser
            report.errors.append(f"text drift skipped: {exc}")
    if snapshot is None:
        report.seconds = time.perf_counter() - started
        return report
    for item in snapshot.dict().get("metrics", []):
        cfg = item.get("config", {})
        name = cfg.get("column") or cfg.get("embeddings_name")
        value = item.get("value")
        if name is not None and isinstance(value, int | float):
            report.values[str(name)] = float(value)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
        report.html_path = str(html_path)
    report.seconds = time.perf_counter() - started
    return report
