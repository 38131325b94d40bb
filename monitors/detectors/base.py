"""The detector interface: an abstract base returning a result dataclass, registered by kind.

Every drift detector (sequential CUSUMs, Evidently reports, Great Expectations suites)
implements :class:`Detector`. The check builds them from the policy's ``monitoring.detectors``
entries with :func:`build_detector`; an unknown kind fails with the list of known ones.
Third-party APIs stay behind their adapters, so an upgrade of Evidently touches one file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Verdict = Literal["ok", "drift", "inconclusive"]


class UnknownDetector(ValueError):
    """A policy names a detector kind that is not registered."""


@dataclass
class Frame:
    """Descriptors of a set of outputs (a window sample or a reference), column-wise.

    ``numeric``: continuous descriptors; ``flags``: 0/1 per output (``violation`` = any
    policy checker fired); ``embeddings``: (n, d) sentence embeddings, or None.
    """

    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        for col in (*self.numeric.values(), *self.flags.values()):
            return len(col)
        return 0 if self.embeddings is None else int(self.embeddings.shape[0])


@dataclass
class DetectorContext:
    """Where a detector may write evidence, and what the window is called."""

    window_key: str = ""
    report_dir: Path | None = None
    cache_dir: Path | None = None
    write_report: bool = True


@dataclass
class DetectorResult:
    """One detector's judgement of one window; stored verbatim in ``drift_checks.detectors``."""

    name: str
    kind: str
    verdict: Verdict
    sample_size: int
    statistic: float | None = None
    threshold: float | None = None
    p_values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    rollback_allowed: bool = False
    # the state to keep for the next window (sequential detectors), JSON-serialisable
    state: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("state")
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class Detector(ABC):
    """A drift detector configured from one policy entry (``name``: its ``DetectorPolicy``)."""

    kind: ClassVar[str]

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    @property
    def rollback_allowed(self) -> bool:
        return bool(getattr(self.config, "rollback", False))

    @property
    def arl(self) -> float | None:
        value = getattr(self.config, "arl", None)
        return float(value) if value is not None else None

    @abstractmethod
    def run(
        self, *, reference: Reference, window: Frame, state: dict[str, Any] | None, context: DetectorContext
    ) -> DetectorResult:
        """Judge ``window`` against ``reference``, continuing from ``state`` (None: a fresh start)."""

    def result(self, verdict: Verdict, window: Frame, **kw: Any) -> DetectorResult:
        return DetectorResult(
            name=self.name, kind=self.kind, verdict=verdict, sample_size=window.n,
            rollback_allowed=self.rollback_allowed, **kw,
        )


@dataclass
class Reference:
    """What "normal" looks like for one (deployment, version): descriptor rows and summaries.

    ``embeddings`` holds the reference rows projected on ``emb_components`` (whitened
    principal components of the reference embeddings), so windows are compared in the
    same small space; ``emb_mean`` / ``emb_components`` project new embeddings.
    ``emb_novelty`` is the embedding novelty score's model and the reference rows' scores
    (see :func:`novelty_score`); references built before it was stored have None.
    """

    frame: Frame
    emb_mean: np.ndarray | None = None
    emb_components: np.ndarray | None = None  # (k, d), rows scaled so projections have unit variance
    # {"centre", "sd", "t2_scale", "spe_scale", "scores"}: see monitors.reference.novelty_model
    emb_novelty: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.frame.n

    def project(self, embeddings: np.ndarray | None) -> np.ndarray | None:
        if embeddings is None or self.emb_mean is None or self.emb_components is None:
            return None
        return (np.asarray(embeddings, dtype=float) - self.emb_mean) @ self.emb_components.T

    def novelty(self, embeddings: np.ndarray | None) -> np.ndarray | None:
        """Novelty scores of new embeddings (:func:`novelty_score` with the stored model)."""
        model = self.emb_novelty
        if embeddings is None or model is None or self.emb_components is None:
            return None
        return novelty_score(embeddings, self.emb_components, centre=np.asarray(model["centre"], dtype=float),
                             sd=np.asarray(model["sd"], dtype=float), t2_scale=float(model["t2_scale"]),
                             spe_scale=float(model["spe_scale"]))

    def key(self) -> str:
        """A short digest of the reference contents (names calibrations in the cache)."""
        import hashlib

        h = hashlib.sha256()
        for name in sorted(self.frame.numeric):
            h.update(name.encode())
            h.update(np.asarray(self.frame.numeric[name], dtype=float).round(6).tobytes())
        for name in sorted(self.frame.flags):
            h.update(name.encode())
            h.update(np.asarray(self.frame.flags[name], dtype=np.int8).tobytes())
        if self.frame.embeddings is not None:
            h.update(np.asarray(self.frame.embeddings, dtype=float).round(5).tobytes())
        return h.hexdigest()[:20]


def t2_spe(rows: np.ndarray, components: np.ndarray, *, centre: np.ndarray, sd: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """The PCA process-monitoring pair per row: Hotelling's T^2 = sum_j (u_j . (x - centre) / sd_j)^2
    in the directions u_j of ``components`` (k, d; only their directions matter, so whitened
    rows do, and they must be orthogonal) and the squared prediction error (SPE, or Q):
    the energy of ``x - centre`` outside their span.
    """
    d = np.atleast_2d(np.asarray(rows, dtype=float)) - np.asarray(centre, dtype=float)  # (n, D)
    comps = np.atleast_2d(np.asarray(components, dtype=float))  # (k, D)
    norms = np.linalg.norm(comps, axis=1, keepdims=True)
    inside = d @ (comps / np.where(norms > 0, norms, 1.0)).T  # (n, k)
    t2 = ((inside / np.asarray(sd, dtype=float)) ** 2).sum(axis=1)
    spe = np.maximum((d * d).sum(axis=1) - (inside * inside).sum(axis=1), 0.0)
    return t2, spe


def novelty_score(rows: np.ndarray, components: np.ndarray, *, centre: np.ndarray, sd: np.ndarray,
                  t2_scale: float, spe_scale: float) -> np.ndarray:
    """``max(T^2 / t2_scale, SPE / spe_scale)`` per row: how unusual an embedding is, inside the
    principal subspace or out of it (a scale <= 0 leaves that part out)."""
    t2, spe = t2_spe(rows, components, centre=centre, sd=sd)
    out = t2 / t2_scale if t2_scale > 0 else np.zeros_like(t2)
    return np.maximum(out, spe / spe_scale) if spe_scale > 0 else out


_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"detector kind {cls.kind!r} is registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def known_kinds() -> list[str]:
    return sorted(_REGISTRY)


def detector_class(kind: str) -> type[Detector]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise UnknownDetector(f"unknown detector kind {kind!r} (known: {', '.join(known_kinds())})") from None
