"""Aligner: one global token (plus a gate per layer and head) aligns a frozen LLM.

The method of Zhou et al., arXiv 2312.05503, for transformers Llama-family causal LMs:
attach/detach an adapter, hot-swap token versions (whole batch or per row), save and
load token artifacts, load base models offline, and train tokens with SFT or DPO.
This package imports torch and transformers only, never the governance service.
"""

from aligner import _offline  # noqa: F401  (sets HF_HUB_OFFLINE before transformers loads)
from aligner.config import AlignerConfig
from aligner.errors import (
    AlignerError,
    AlreadyAttachedError,
    BaseModelMismatchError,
    DataError,
    InvalidTokenError,
    ModelNotFoundError,
    NotAttachedError,
    UnsupportedModelError,
)
from aligner.model import AlignerAdapter, ModelShape, attach, detach, get_adapter, require_adapter

__all__ = [
    "AlignerAdapter",
    "AlignerConfig",
    "AlignerError",
    "AlreadyAttachedError",
    "BaseModelMismatchError",
    "DataError",
    "InvalidTokenError",
    "ModelNotFoundError",
    "ModelShape",
    "NotAttachedError",
    "UnsupportedModelError",
    "attach",
    "detach",
    "get_adapter",
    "require_adapter",
]
