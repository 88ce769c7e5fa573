"""Optimizers: AdamW (fused on CUDA), 8-bit and paged 8-bit AdamW from bitsandbytes, LoRA+ groups.

LoRA+ (Hayou et al. 2024) trains the B matrices with a learning rate ``loraplus_lr_ratio``
times the A matrices'; the ratio is stored as the group's ``lr_scale`` so the schedule scales
both groups together.
"""

from __future__ import annotations

import torch

from knowlm.errors import KnowlmError

OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")


def param_groups(model, loraplus_lr_ratio: float = 0.0) -> list[dict]:
    """Trainable parameters, split for LoRA+ when asked (B matrices get ``lr_scale``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if loraplus_lr_ratio and loraplus_lr_ratio != 1.0:
        b = [p for n, p in named if ".lora_B." in n or ".lora_embedding_B." in n]
        if not b:
            raise KnowlmError("--loraplus-lr-ratio needs LoRA B matrices to train (use it with --lora or --qlora)")
        ids = {id(p) for p in b}
        return [{"params": [p for _, p in named if id(p) not in ids], "lr_scale": 1.0},
                {"params": b, "lr_scale": float(loraplus_lr_ratio)}]
    return [{"params": [p for _, p in named], "lr_scale": 1.0}]


def check_optimizer(name: str, device: torch.device) -> None:
    """Say why an 8-bit optimizer cannot run here before the model is loaded."""
    if name not in OPTIMIZERS:
        raise KnowlmError(f"unknown --optim {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if name == "adamw":
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise KnowlmError(f"--optim {name} needs bitsandbytes: pip install bitsandbytes (or use --optim adamw)") from None
    if device.type != "cuda":
        raise KnowlmError(f"--optim {name} keeps its state on a CUDA GPU; this machine has none (use --optim adamw)")


def build_optimizer(groups: list[dict], cfg, device: torch.device, fused: bool):
    """The optimizer named by ``cfg.optim`` over ``groups``; ``fused`` asks for torch's fused AdamW kernel."""
    kwargs = dict(lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                  weight_decay=cfg.weight_decay)
    name = getattr(cfg, "optim", "adamw")
    check_optimizer(name, device)
    if name == "adamw":
        if fused and device.type == "cuda":
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        return torch.optim.AdamW(groups, **kwargs)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(groups, **kwargs)
