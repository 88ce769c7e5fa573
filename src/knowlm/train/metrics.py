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
    """Append one JSON object per logging step to ``metrics.jsonl``; only rank 0 writes (and reports)."""

    def __init__(self, output: Path, enabled: bool, resume_step: int = 0, cfg=None, kind: str = ""):
        self.path = Path(output) / "metrics.jsonl"
        self.enabled = enabled
        self.reporters: list = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop lines a killed run wrote after its last checkpoint
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if cfg is not None:
            from knowlm.train.reporters import open_reporters

            self.reporters = open_reporters(cfg, kind)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for reporter in self.reporters:
            reporter.log(record)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def running_mean(steps: list[int], losses: list[float], window: int) -> tuple[list[int], list[float]]:
    """Trailing mean over the last ``window`` logged steps (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(losses):
        total += value
        if i >= window:
            total -= losses[i - window]
        out.append(total / min(i + 1, window))
    return steps, out


def plot_loss(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Training loss (every logged step, and its running mean), eval loss and IE F1 against step."""
    from knowlm.utils.atomic import atomic_write
    from knowlm.utils.plotting import pyplot

    plt = pyplot()
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    f1_keys = sorted({k for r in records for k in r if k.startswith("ie_") and k.endswith("_f1")})
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="#88aacc", linewidth=0.8, label="train loss (logged steps)")
        window = max(1, len(losses) // 20)
        if window > 1:
            ax.plot(*running_mean(list(steps), list(losses), window), color="#1f4e8c", linewidth=1.8,
                    label=f"train loss, running mean of {window}")
    if evals:
        ax.plot(*zip(*evals), "o-", color="#d1495b", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if f1_keys:
        ax2 = ax.twinx()
        colors = ("#2e933c", "#edae49", "#7b2cbf", "#00798c")
        for key, color in zip(f1_keys, colors):
            points = [(r["step"], 100 * r[key]) for r in records if key in r]
            ax2.plot(*zip(*points), "s--", color=color, label=key.replace("ie_", "IE ").replace("_f1", " F1 (%)"))
        ax2.set_ylabel("IE F1 (%)")
        ax2.set_ylim(0, 100)
        more_h, more_l = ax2.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_write(png_path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return png_path
