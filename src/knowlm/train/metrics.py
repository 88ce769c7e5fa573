"""Training metrics: JSONL log, optional TensorBoard, model FLOPs utilisation, loss-curve PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Dense bf16/fp16 tensor-core peak per GPU (FLOP/s), from vendor data sheets.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def peak_flops(device) -> float | None:
    """Peak FLOP/s of one device, or None where unknown (CPU). ``KNOWLM_PEAK_FLOPS`` overrides."""
    if os.environ.get("KNOWLM_PEAK_FLOPS"):
        return float(os.environ["KNOWLM_PEAK_FLOPS"])
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def flops_per_token(config, seq_len: int, trainable_fraction: float = 1.0) -> float:
    """Training FLOPs per token (PaLM appendix B): 6N for the weights plus 12·L·H·T for attention.

    N excludes the input embedding (a lookup, not a matmul). With LoRA, only about a third of
    the backward weight work remains; we keep 6N, as MFU is conventionally reported.
    """
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    inter = getattr(config, "intermediate_size", 4 * hidden)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attn = hidden * head_dim * (heads + 2 * kv) + heads * head_dim * hidden
    mlp = 3 * hidden * inter
    n = layers * (attn + mlp) + hidden * config.vocab_size  # + lm_head
    return 6 * n + 12 * layers * hidden * seq_len


class MetricsLogger:
    """Append one JSON object per logging step; only rank 0 writes."""

    def __init__(self, output: Path, enabled: bool, resume_step: int = 0, tensorboard: bool = False):
        self.path = Path(output) / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop lines a killed run wrote after its last checkpoint
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(output) / "tensorboard"))
            except ImportError:
                self.writer = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Draw training (and evaluation) loss against step."""
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import pyplot

    plt = pyplot()
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_write(png_path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return png_path
