"""Token artifacts: the tensors of one Aligner version plus the manifest that says where they belong.

An `AlignerToken` is a prefix P (n, d), gates g (L, H) and a `TokenManifest`. It lives in
two forms that hold the same bytes:

- one canonical archive, `to_bytes()` / `from_bytes()`: a valid safetensors file whose
  `__metadata__` holds the manifest as canonical JSON (sorted keys, no spaces), with the
  tensors in name order and the header written by this module, not by the safetensors
  library, so the bytes depend on nothing but the token. This is what gets uploaded and
  what the registry stores.
- a directory for people and for `govern submit DIR`: `token.safetensors` (the archive)
  and `manifest.json` (the same manifest, indented, for reading and diffing).

The artifact digest `sha256` is the sha256 of the canonical archive; it does not depend on
file names, timestamps or how the token was read. Every way in (`from_bytes`, `load`)
validates: format version, tensor names, shapes against the manifest, dtypes, finite
values; `check_base` and `validate_against` compare with a base model. Failures raise
`InvalidTokenError` / `BaseModelMismatchError` with a message that says what was wrong.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from aligner.config import dtype_name, parse_dtype
from aligner.errors import BaseModelMismatchError, InvalidTokenError

FORMAT_VERSION = 1
TOKEN_FILE = "token.safetensors"
MANIFEST_FILE = "manifest.json"
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a 10-token fp32 version of a 8k-wide model is ~330 KB
_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
_TENSORS = ("gates", "prefix")  # canonical order (sorted)


@dataclass(frozen=True)
class TokenManifest:
    """What a token is, where it came from and which base model it fits."""

    base_model: str  # provider name or path the token was trained on (informative)
    base_model_digest: str  # sha256 of the base weights as loaded (aligner.providers.weights_digest)
    tokenizer_digest: str  # sha256 of the tokenizer (aligner.providers.tokenizer_digest)
    n_tokens: int
    param_count: int  # n_tokens * hidden_size + num_layers * num_heads
    hidden_size: int
    num_layers: int
    num_heads: int
    dtype: str  # of the stored tensors: "float32", "bfloat16" or "float16"
    training_method: str  # "sft", "dpo", "manual", ...
    data_digest: str | None  # sha256 of the training data file(s)
    seed: int | None
    created_at: str  # ISO 8601, UTC
    parent_sha256: str | None = None  # the version this one was trained from, if any
    format_version: int = FORMAT_VERSION
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> TokenManifest:
        if not isinstance(data, dict):
            raise InvalidTokenError("manifest must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidTokenError(f"unsupported token format_version {version!r}; this code reads {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidTokenError(f"manifest has unknown fields: {', '.join(unknown)}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise InvalidTokenError(f"manifest is missing fields: {', '.join(missing)}")
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise InvalidTokenError(f"manifest is malformed: {exc}") from None
        for name in ("n_tokens", "param_count", "hidden_size", "num_layers", "num_heads"):
            value = getattr(manifest, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidTokenError(f"manifest field {name} must be a positive integer, got {value!r}")
        if manifest.dtype not in ("float32", "bfloat16", "float16"):
            raise InvalidTokenError(f"manifest dtype {manifest.dtype!r} is not float32, bfloat16 or float16")
        for name in ("base_model_digest", "tokenizer_digest"):
            if not isinstance(getattr(manifest, name), str) or len(getattr(manifest, name)) != 64:
                raise InvalidTokenError(f"manifest field {name} must be a sha256 hex digest")
        expected = manifest.n_tokens * manifest.hidden_size + manifest.num_layers * manifest.num_heads
        if manifest.param_count != expected:
            raise InvalidTokenError(f"manifest param_count {manifest.param_count} != n*d + L*H = {expected}")
        return manifest


def _encode_archive(manifest: TokenManifest, tensors: dict[str, torch.Tensor]) -> bytes:
    entries: dict[str, Any] = {"__metadata__": {"manifest": manifest.canonical_json()}}
    blobs: list[bytes] = []
    offset = 0
    for name in _TENSORS:
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes()
        span = [offset, offset + len(raw)]
        entries[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": span}
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(header)) + header + b"".join(blobs)


@dataclass(frozen=True, eq=False)
class AlignerToken:
    """One Aligner version: prefix (n, d), gates (L, H) and its manifest."""

    prefix: torch.Tensor
    gates: torch.Tensor
    manifest: TokenManifest

    def __post_init__(self) -> None:
        _validate(self.prefix, self.gates, self.manifest)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        prefix: torch.Tensor,
        gates: torch.Tensor,
        *,
        base_model: str,
        base_model_digest: str,
        tokenizer_digest: str,
        training_method: str,
        data_digest: str | None = None,
        seed: int | None = None,
        parent_sha256: str | None = None,
        dtype: str = "float32",
        hyperparameters: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> AlignerToken:
        """A new token from tensors (e.g. `adapter.export()`), manifest fields filled in from them."""
        torch_dtype = parse_dtype(dtype)
        prefix = prefix.detach().to("cpu", torch_dtype).contiguous().clone()
        gates = gates.detach().to("cpu", torch_dtype).contiguous().clone()
        if prefix.dim() != 2 or gates.dim() != 2:
            raise InvalidTokenError(f"prefix and gates must be 2-D, got {tuple(prefix.shape)} and {tuple(gates.shape)}")
        n, d = prefix.shape
        L, H = gates.shape
        manifest = TokenManifest(
            base_model=base_model,
            base_model_digest=base_model_digest,
            tokenizer_digest=tokenizer_digest,
            n_tokens=n,
            param_count=n * d + L * H,
            hidden_size=d,
            num_layers=L,
            num_heads=H,
            dtype=dtype,
            training_method=training_method,
            data_digest=data_digest,
            seed=seed,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            parent_sha256=parent_sha256,
            hyperparameters=dict(hyperparameters or {}),
            metrics=dict(metrics or {}),
        )
        return cls(prefix, gates, manifest)

    # -- bytes -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The canonical archive (a safetensors file with the manifest in its metadata)."""
        return _encode_archive(self.manifest, {"prefix": self.prefix, "gates": self.gates})

    @property
    def sha256(self) -> str:
        """The artifact digest: sha256 of the canonical archive."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> AlignerToken:
        """Parse and validate an archive; any defect raises InvalidTokenError saying which."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidTokenError(f"token archive must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_ARCHIVE_BYTES:
            raise InvalidTokenError(f"token archive is {len(data)} bytes, more than the {MAX_ARCHIVE_BYTES} allowed")
        if len(data) < 8:
            raise InvalidTokenError("token archive is truncated (no safetensors header)")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8:
            raise InvalidTokenError("token archive is truncated or not a safetensors file (bad header length)")
        try:
            header = json.loads(data[8 : 8 + header_len])
            tensors = load(data)
        except (ValueError, SafetensorError) as exc:
            raise InvalidTokenError(f"token archive is not a valid safetensors file: {exc}") from None
        if not isinstance(header, dict):
            raise InvalidTokenError("token archive header is not a JSON object")
        meta = header.get("__metadata__") or {}
        if "manifest" not in meta:
            raise InvalidTokenError("token archive has no manifest in its safetensors metadata")
        try:
            manifest_data = json.loads(meta["manifest"])
        except ValueError as exc:
            raise InvalidTokenError(f"token manifest is not valid JSON: {exc}") from None
        names = sorted(tensors)
        if names != sorted(_TENSORS):
            raise InvalidTokenError(f"token archive must hold exactly the tensors 'gates' and 'prefix', got {names}")
        return cls(tensors["prefix"], tensors["gates"], TokenManifest.from_dict(manifest_data))

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `path/token.safetensors` + `path/manifest.json` (a directory), or one archive file
        when `path` ends in `.safetensors`. Returns the path written."""
        path = Path(path)
        data = self.to_bytes()
        if path.suffix == ".safetensors":
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
            return path
        path.mkdir(parents=True, exist_ok=True)
        _atomic_write(path / TOKEN_FILE, data)
        text = json.dumps({**self.manifest.to_dict(), "sha256": self.sha256}, indent=2, sort_keys=True) + "\n"
        _atomic_write(path / MANIFEST_FILE, text.encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> AlignerToken:
        """Read a token directory (or a single archive file) and validate it."""
        path = Path(path)
        file = path / TOKEN_FILE if path.is_dir() else path
        if not file.exists():
            where = f"{path} has no {TOKEN_FILE}" if path.is_dir() else f"{path} does not exist"
            raise InvalidTokenError(f"cannot load token: {where}")
        token = cls.from_bytes(file.read_bytes())
        side = path / MANIFEST_FILE if path.is_dir() else None
        if side is not None and side.exists():
            try:
                readable = json.loads(side.read_text())
            except ValueError as exc:
                raise InvalidTokenError(f"{side} is not valid JSON: {exc}") from None
            recorded = readable.pop("sha256", None) if isinstance(readable, dict) else None
            if readable != token.manifest.to_dict():
                raise InvalidTokenError(
                    f"{side} disagrees with the manifest inside {file}; the archive is authoritative"
                )
            if recorded is not None and recorded != token.sha256:
                raise InvalidTokenError(
                    f"{side} records sha256 {recorded[:12]}… but the archive is {token.sha256[:12]}…"
                )
        return token

    # -- fit with a base model -------------------------------------------------------------
    def validate_against(self, shape: Any, base_model_digest: str | None = None) -> None:
        """Check the token fits a base model described by a dict or ModelShape (no model needed).

        Accepts keys hidden_size, num_layers (or num_hidden_layers), num_heads (or
        num_attention_heads), as in `BaseDigests.to_dict()` or a transformers config dict.
        """
        info = shape if isinstance(shape, dict) else getattr(shape, "__dict__", {})
        wanted = {
            "hidden_size": info.get("hidden_size"),
            "num_layers": info.get("num_layers", info.get("num_hidden_layers")),
            "num_heads": info.get("num_heads", info.get("num_attention_heads")),
        }
        problems = [
            f"{k} is {getattr(self.manifest, k)} in the token but {v} in the base model"
            for k, v in wanted.items()
            if v is not None and getattr(self.manifest, k) != v
        ]
        missing = [k for k, v in wanted.items() if v is None]
        if missing:
            raise BaseModelMismatchError(f"base model description lacks {', '.join(missing)}")
        if base_model_digest is not None and base_model_digest != self.manifest.base_model_digest:
            problems.append(
                f"token was trained on base model {self.manifest.base_model_digest[:12]}…, "
                f"this one is {base_model_digest[:12]}…"
            )
        if problems:
            raise BaseModelMismatchError("token does not fit the base model: " + "; ".join(problems))

    def check_base(self, digests: Any) -> None:
        """validate_against a loaded base model's BaseDigests (shape and weights digest)."""
        self.validate_against(digests.shape, digests.weights)


def _validate(prefix: torch.Tensor, gates: torch.Tensor, manifest: TokenManifest) -> None:
    m = manifest
    want_p, want_g = (m.n_tokens, m.hidden_size), (m.num_layers, m.num_heads)
    if tuple(prefix.shape) != want_p:
        raise InvalidTokenError(f"prefix has shape {tuple(prefix.shape)}, the manifest says {want_p}")
    if tuple(gates.shape) != want_g:
        raise InvalidTokenError(f"gates have shape {tuple(gates.shape)}, the manifest says {want_g}")
    for name, t in (("prefix", prefix), ("gates", gates)):
        if dtype_name(t.dtype) != m.dtype:
            raise InvalidTokenError(f"{name} is {dtype_name(t.dtype)}, the manifest says {m.dtype}")
        if not torch.isfinite(t).all():
            raise InvalidTokenError(f"{name} holds non-finite values (NaN or inf)")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def data_digest(*paths: str | Path) -> str:
    """sha256 over the bytes of one or more data files, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()
