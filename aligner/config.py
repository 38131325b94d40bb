"""Configuration of an Aligner adapter: how many global tokens and how they start.

One dataclass, one comment per field. The defaults are the paper's: one global token
and zero gates, so that attaching an adapter leaves the base model unchanged until
training moves the gates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class AlignerConfig:
    # Number of global prefix tokens P (n in the paper); every layer attends to all of them.
    n_tokens: int = 1
    # Initial value of every gate g; tanh(0) = 0 keeps the attached model equal to the base.
    gate_init: float = 0.0
    # Standard deviation of the random init of P. P enters k_proj/v_proj without the
    # layer's RMSNorm, so unit scale matches what those projections usually see.
    init_std: float = 1.0
    # dtype of the trainable tensors ("float32", "bfloat16", "float16"); None = the model's.
    dtype: str | None = None
    # Seed for the random init of P; None uses the current torch RNG state.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_tokens, int) or self.n_tokens < 1:
            raise ValueError(f"n_tokens must be a positive integer, got {self.n_tokens!r}")
        if self.init_std <= 0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or None, got {self.dtype!r}")

    def torch_dtype(self, default: torch.dtype) -> torch.dtype:
        return _DTYPES[self.dtype] if self.dtype is not None else default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dtype_name(dtype: torch.dtype) -> str:
    """The short name we write into manifests ("float32"), the inverse of `parse_dtype`."""
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"unsupported dtype {dtype}; use one of {sorted(_DTYPES)}")


def parse_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]
