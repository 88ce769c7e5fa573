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
