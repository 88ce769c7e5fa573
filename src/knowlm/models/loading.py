"""Load a causal LM and its tokenizer from a local directory or a hub id.

The same code path serves a 2-layer test model and a 13B checkpoint: dtype and device
resolution, bitsandbytes 8/4-bit loading on CUDA, multi-GPU placement with a per-GPU memory
budget (KnowLM's ``--multi_gpu --allocate``) and an optional PEFT adapter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from knowlm.errors import KnowlmError
from knowlm.models.manifest import read_manifest

DTYPES = ("auto", "float32", "float16", "bfloat16")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name


def resolve_model_path(model: str) -> str:
    """A local directory with a config.json, or a hub id; a clear error otherwise."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise KnowlmError(f"{model} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if _looks_like_path(model) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise KnowlmError(f"model directory not found: {model}")
    return model  # a hub id such as zjunlp/OneKE


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KnowlmError("device 'cuda' requested but no CUDA GPU is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise KnowlmError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise KnowlmError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(model: str, padding_side: str = "left"):
    """The model's tokenizer, with a pad token (LLaMA has none: we use unk, as alpaca-lora did)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise KnowlmError(f"cannot load tokenizer from {model}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load(
    model: str,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    allocate: Sequence[float] | None = None,
    trust_remote_code: bool = False,
    padding_side: str = "left",
):
    """Return ``(model, tokenizer)`` ready for generation (eval mode).

    quantization: None, "8bit" or "4bit" (bitsandbytes, CUDA only).
    allocate: GiB per GPU, e.g. ``[10, 10, 10]``: spreads layers over GPUs within that budget.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}

    if quantization is not None:
        if quantization not in ("8bit", "4bit"):
            raise KnowlmError(f"unknown quantization {quantization!r}; use 8bit or 4bit")
        if not device.startswith("cuda"):
            raise KnowlmError(f"{quantization} loading needs a CUDA GPU and bitsandbytes; this machine has no GPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if quantization == "8bit"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
        )
        kwargs["device_map"] = {"": 0}
    if allocate:
        if not device.startswith("cuda"):
            raise KnowlmError("--allocate places the model over several GPUs; this machine has no GPU")
        if len(allocate) > torch.cuda.device_count():
            raise KnowlmError(f"--allocate names {len(allocate)} GPUs but {torch.cuda.device_count()} are visible")
        kwargs["device_map"] = "auto"
        kwargs["max_memory"] = {i: f"{gib}GiB" for i, gib in enumerate(allocate)}

    try:
        lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise KnowlmError(f"cannot load model from {model}: {str(exc).splitlines()[0]}") from None
    if "device_map" not in kwargs:
        lm.to(device)
    tokenizer = load_tokenizer(path, padding_side=padding_side)
    if adapter:
        lm = apply_adapter(lm, adapter)
    lm.eval()
    lm.knowlm_template = resolve_template(path, adapter)
    return lm, tokenizer


def apply_adapter(lm, adapter: str):
    """Wrap ``lm`` with a PEFT adapter from a local directory (or hub id)."""
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise KnowlmError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    if not path.exists() and (_looks_like_path(adapter) or os.environ.get("HF_HUB_OFFLINE") == "1"):
        raise KnowlmError(f"adapter directory not found: {adapter}")
    try:
        return PeftModel.from_pretrained(lm, str(path) if path.exists() else adapter)
    except (OSError, ValueError) as exc:
        raise KnowlmError(f"cannot load adapter {adapter}: {str(exc).splitlines()[0]}") from None


def resolve_template(model: str, adapter: str | None = None, override: str | None = None) -> str:
    """The prompt template to use: explicit choice, else the adapter's, else the model's, else alpaca."""
    if override:
        return override
    for directory in (adapter, model):
        if directory and Path(directory).is_dir():
            template = read_manifest(directory).get("template")
            if template:
                return template
    return "alpaca"
