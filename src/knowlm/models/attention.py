"""Which kernels a loaded model computes with: the attention implementation and hub kernels.

Shared by the training and inference loaders, so ``--attn-implementation`` means the same
everywhere. ``auto`` is flash-attention 2 on a CUDA GPU with ``flash_attn`` installed and a
half-precision dtype, else PyTorch SDPA (which picks its own flash/memory-efficient kernels on
GPUs). Packed rows work with every choice: transformers reads document boundaries from
``position_ids`` (varlen flash-attention, a flex-attention block mask, or a block-diagonal mask).

Hub kernels (the ``kernels`` package, which transformers uses by default when installed) fetch
code from the Hugging Face Hub when a model is put in training mode: offline that crashes
(``HF_HUB_OFFLINE=1``), online it downloads code at train time. They are off unless asked for
with ``--hub-kernels`` or ``KNOWLM_HUB_KERNELS=1``.
"""

from __future__ import annotations

import importlib.util
import os

from knowlm.errors import KnowlmError

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "flex_attention", "eager")


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(name: str, device_type: str, half_precision: bool) -> str:
    """The transformers ``attn_implementation`` for ``name`` on this device, or a one-line error."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise KnowlmError(f"unknown --attn-implementation {name!r}; choose one of: {', '.join(ATTN_IMPLEMENTATIONS)}")
    if name == "auto":
        return "flash_attention_2" if device_type == "cuda" and half_precision and flash_attn_available() else "sdpa"
    if name == "flash_attention_2":
        if device_type != "cuda":
            raise KnowlmError("--attn-implementation flash_attention_2 needs a CUDA GPU; use sdpa on CPU")
        if not flash_attn_available():
            raise KnowlmError("--attn-implementation flash_attention_2 needs the flash-attn package (pip install flash-attn)")
        if not half_precision:
            raise KnowlmError("flash-attention runs in bf16/fp16 only; use --precision bf16 (or fp16) with it")
    return name


def hub_kernels_enabled(requested: bool = False) -> bool:
    """Hub kernels only on request: the flag, or ``KNOWLM_HUB_KERNELS=1``."""
    return bool(requested) or os.environ.get("KNOWLM_HUB_KERNELS", "").lower() in ("1", "yes", "true")


def load_kwargs(attn_implementation: str, device_type: str, half_precision: bool, hub_kernels: bool = False) -> dict:
    """``from_pretrained`` keyword arguments that fix the compute kernels."""
    return {"attn_implementation": resolve_attn_implementation(attn_implementation, device_type, half_precision),
            "use_kernels": hub_kernels_enabled(hub_kernels)}
