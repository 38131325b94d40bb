"""Errors of the aligner package: one base class, one subclass per thing that can go wrong.

Callers (the registry, the CLI, serving) map these to their own responses; every
message says what was wrong and, where it helps, what to do.
"""

from __future__ import annotations


class AlignerError(Exception):
    """Base class of every error raised on purpose by the aligner package."""


class UnsupportedModelError(AlignerError):
    """The model is not a Llama-family causal LM this package knows how to wrap."""


class AlreadyAttachedError(AlignerError):
    """attach() was called on a model that already carries an Aligner adapter."""


class NotAttachedError(AlignerError):
    """An operation needs an attached adapter and the model has none."""


class InvalidTokenError(AlignerError):
    """A token artifact is malformed, has wrong shapes, or holds non-finite values."""


class BaseModelMismatchError(InvalidTokenError):
    """A token was trained on another base model (its digest or shapes differ)."""


class DataError(AlignerError):
    """A training or evaluation file is malformed (the message names file and line)."""


class ModelNotFoundError(AlignerError):
    """A base model name is neither a known provider nor a local transformers directory."""
