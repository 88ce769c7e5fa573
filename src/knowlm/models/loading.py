"""Load a causal LM and its tokenizer from a local directory or a hub id.

The same code path serves a 2-layer test model and a 13B checkpoint: dtype and device
resolution, bitsandbytes 8/4-bit loading on CUDA, multi-GPU placement with a per-GPU memory
budget (KnowLM's ``--multi_gpu --allocate``) and an optional PEFT adapter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from knowlm.errors import KnowlmError
from knowlm.models.templates import get as get_template
from knowlm.models.templates import resolve_template

DTYPES = ("auto", "float32", "float16", "bfloat16")


_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` can only mean a hub repo id ("gpt2", "zjunlp/OneKE"); "./x", "/abs", "a/b/c",
    "~/m" are paths, and so is "demo-work/model" when ``demo-work`` is a local directory (a mistyped
    local path must say "not found" at once, not spend a minute asking the hub). The one test for
    models, adapters and tokenizers."""
    if not _HUB_ID.match(name):
        return False
    owner = name.split("/", 1)[0] if "/" in name else None
    return owner is None or not Path(owner).is_dir()


def _locate(name: str, what: str) -> str:
    """An existing local path as a string, else ``name`` when it can be a hub id; a clear error otherwise."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if not is_hub_id(name) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise KnowlmError(f"{what} not found: {name}")
    return name  # a hub id such as zjunlp/OneKE


def resolve_model_path(model: str) -> str:
    """A local directory with a config.json, or a hub id; a clear error otherwise."""
    located = _locate(model, "model directory")
    path = Path(located)
    if path.exists() and (not path.is_dir() or not (path / "config.json").is_file()):
        raise KnowlmError(f"{model} is not a Hugging Face model directory (no config.json)")
    return located


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


def prepare_tokenizer(tokenizer, padding_side: str | None = None):
    """Give ``tokenizer`` a pad token (LLaMA has none: unk, as alpaca-lora did, else EOS) and, if asked,
    a padding side. Idempotent; the one place this is done, for tokenizers we load and ones we are handed."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_tokenizer(name: str, padding_side: str = "left"):
    """The tokenizer of a model directory, tokenizer-only directory or hub id, prepared
    (:func:`prepare_tokenizer`); a one-line KnowlmError when it cannot be loaded.

    ``padding_side`` is the default for batches: left for generation, right for training.
    """
    from transformers import AutoTokenizer

    located = _locate(name, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(located)
    except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot use this tokenizer"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KnowlmError(f"cannot load tokenizer {name}: {first}") from None
    return prepare_tokenizer(tokenizer, padding_side)


def load(
    model: str,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    allocate: Sequence[float] | None = None,
    trust_remote_code: bool = False,
    padding_side: str = "left",
    template: str | None = None,
):
    """Return ``(model, tokenizer)`` ready for generation (eval mode).

    quantization: None, "8bit" or "4bit" (bitsandbytes, CUDA only).
    allocate: GiB per GPU, e.g. ``[10, 10, 10]``: spreads layers over GPUs within that budget.
    template: the already resolved prompt template (``knowlm.infer.load_generator`` passes it);
    recorded as ``model.knowlm_template`` (kept for compatibility), resolved here when not given.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model)
    # Checked before the (slow) weights load: an unknown name or a bad manifest fails at once.
    template = get_template(template).name if template else resolve_template(path, adapter)
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
    lm.knowlm_template = template
    return lm, tokenizer


def apply_adapter(lm, adapter: str):
    """Wrap ``lm`` with a PEFT adapter from a local directory (or hub id)."""
    from peft import PeftModel

    path = Path(adapter).expanduser()
    located = _locate(adapter, "adapter directory")
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise KnowlmError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        return PeftModel.from_pretrained(lm, located)
    except (OSError, ValueError) as exc:
        raise KnowlmError(f"cannot load adapter {adapter}: {str(exc).splitlines()[0]}") from None
