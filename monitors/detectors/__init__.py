"""Drift detectors behind our own interface (see :mod:`monitors.detectors.base`).

Importing this package registers every built-in kind; :func:`build_detector` turns one
policy entry into a configured detector.
"""

from __future__ import annotations

from typing import Any

from monitors.detectors import reports as _reports  # noqa: F401  (registers its kinds)
from monitors.detectors import sequential as _sequential  # noqa: F401
from monitors.detectors.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    Frame,
    Reference,
    UnknownDetector,
    detector_class,
    known_kinds,
    register,
)
from monitors.detectors.sequential import resolve_kind


def build_detector(name: str, config: Any, *, policy: Any = None, flags: list[str] | None = None) -> Detector:
    """A configured detector for the policy entry ``monitoring.detectors.<name>``."""
    kind, options = resolve_kind(name, str(getattr(config, "kind", "")), flags)
    cls = detector_class(kind)
    if kind == "expectations":
        options["policy"] = policy
    return cls(name, config, **options)


__all__ = [
    "Detector",
    "DetectorContext",
    "DetectorResult",
    "Frame",
    "Reference",
    "UnknownDetector",
    "build_detector",
    "detector_class",
    "known_kinds",
    "register",
]
