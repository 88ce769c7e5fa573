"""The training stages of ``knowlm demo``: a few CPU steps each, on the bundled sample data."""

from __future__ import annotations

from pathlib import Path


def _short(summary: dict) -> dict:
    keys = ("output", "steps", "final_loss", "eval_loss", "tokens", "tokens_per_s", "elapsed_s", "method",
            "trainable_params", "template", "loss_plot")
    return {k: summary.get(k) for k in keys}


def demo_stage_pretrain(workdir: str | Path, model_dir: str | Path, data_prefix: str | Path, steps: int = 12) -> dict:
    """Continue pretraining ``model_dir`` on the prepared corpus -> ``WORKDIR/pretrain`` (full model)."""
    from knowlm.train.config import PretrainConfig
    from knowlm.train.pretrain import pretrain

    cfg = PretrainConfig(
        model=str(model_dir), data=[str(data_prefix)], output=str(Path(workdir) / "pretrain"),
        seq_len=128, micro_batch_size=4, max_steps=steps, learning_rate=2e-3, warmup_steps=2,
        logging_steps=2, eval_split=0.1, strategy="single", overwrite=True,
    )
    summary = pretrain(cfg, quiet=True)
    first = _short(summary)
    data = summary["data"]  # the corpus is packed at 256 tokens: longer samples continue, nothing is dropped
    first.update({k: data[k] for k in ("seq_len", "long_sequences", "continued_examples", "truncated_tokens")})
    from knowlm.train.metrics import read_metrics

    losses = [r["loss"] for r in read_metrics(cfg.output) if "loss" in r]
    first["first_loss"] = losses[0] if losses else None
    return first


def demo_stage_sft(workdir: str | Path, model_dir: str | Path, data_file: str | Path | None = None, steps: int = 12) -> dict:
    """LoRA instruction tuning on IE instructions (default: the bundled sample) -> ``WORKDIR/sft`` (adapter)."""
    from knowlm.resources import path as resource_path
    from knowlm.train.config import SFTConfig
    from knowlm.train.sft import sft

    cfg = SFTConfig(
        model=str(model_dir), data=[str(data_file or resource_path("sft_sample.jsonl"))],
        output=str(Path(workdir) / "sft"), method="lora", lora_r=8, lora_alpha=16, micro_batch_size=2,
        max_steps=steps, learning_rate=5e-3, cutoff_len=384, logging_steps=2, val_size=4,
        group_by_length=True, strategy="single", overwrite=True,
    )
    summary = sft(cfg, quiet=True)
    short = _short(summary)
    short["truncated"] = summary["data"]["truncated"]
    short["train_examples"] = summary["data"]["train_examples"]
    return short
