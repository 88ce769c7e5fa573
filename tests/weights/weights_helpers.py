"""Helpers for the weight-tool tests: perturbed copies of the tiny LLaMA, state dicts, leftover checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def perturbed_copy(src: Path, dst: Path, scale: float = 1e-3, seed: int = 1, tiny_values: bool = True) -> Path:
    """A "fine-tuned" copy of ``src``: every float tensor nudged, a few values made tiny (forces diff fixups)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    path = dst / "model.safetensors"
    state = load_file(str(path))
    gen = torch.Generator().manual_seed(seed)
    for name, t in state.items():
        noise = torch.randn(t.shape, generator=gen) * scale
        t = t + noise
        if tiny_values and t.dim() == 2:
            t.view(-1)[:7] = torch.tensor([1e-12, -3e-11, 1e-30, 0.0, -0.0, 7e-9, 1e-20])
        state[name] = t.contiguous()
    save_file(state, str(path), metadata={"format": "pt"})
    return dst


def state_of(directory) -> dict:
    from knowlm.weights import Checkpoint

    with Checkpoint(directory) as ckpt:
        return {n: ckpt.tensor(n) for n in ckpt.names()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def peft_adapter(base_dir, out_dir, resize_to=None, seed: int = 11, **config) -> dict:
    """A trained PEFT LoRA adapter saved exactly as PEFT writes it; returns PEFT's own merged state dict."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if resize_to:
        model.resize_token_embeddings(resize_to, mean_resizing=False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, task_type="CAUSAL_LM", **config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    peft_model.save_pretrained(str(out_dir))
    return peft_model.merge_and_unload().state_dict()
