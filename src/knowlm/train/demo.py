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


def dev_records(data_file: Path, out: Path, limit: int = 6) -> Path | None:
    """Gold IE records of the dev split beside KG2Instruction's ``train.jsonl`` (``records.jsonl``),
    written to ``out`` for ``--eval-ie``; None when there are none."""
    from knowlm.ie.kg2instruct import split_of
    from knowlm.utils.jsonl import read_jsonl, write_jsonl

    import json

    records_path = data_file.parent / "records.jsonl"
    if not records_path.is_file():
        return None
    stats = data_file.parent / "stats.json"  # the split the KG2Instruction run used, so dev documents are not trained on
    config = json.loads(stats.read_text(encoding="utf-8")).get("config", {}) if stats.is_file() else {}
    ratios, seed = tuple(config.get("split_ratios", (0.8, 0.1, 0.1))), int(config.get("seed", 0))
    dev = [r for r in read_jsonl(records_path) if r.get("relations") and split_of(r["id"].split("#")[0], ratios, seed) == "dev"]
    dev.sort(key=lambda r: (r["lang"] != "en", len(r["text"])))
    if not dev:
        return None
    write_jsonl(out, dev[:limit])
    return out


def demo_stage_sft(workdir: str | Path, model_dir: str | Path, data_file: str | Path | None = None, steps: int = 12) -> dict:
    """LoRA instruction tuning on IE instructions (default: the bundled sample) -> ``WORKDIR/sft`` (adapter).

    With KG2Instruction data, relation F1 on dev documents is measured every quarter of the run
    (``--eval-ie``) and shows in ``sft/metrics.jsonl`` and ``sft/loss.png``.
    """
    from knowlm.resources import path as resource_path
    from knowlm.train.config import SFTConfig
    from knowlm.train.metrics import read_metrics
    from knowlm.train.sft import sft

    data = Path(data_file or resource_path("sft_sample.jsonl"))
    dev = dev_records(data, Path(workdir) / "sft-dev-records.jsonl")
    every = max(1, steps // 4)
    cfg = SFTConfig(
        model=str(model_dir), data=[str(data)], output=str(Path(workdir) / "sft"), method="lora", lora_r=8, lora_alpha=16,
        micro_batch_size=2, max_steps=steps, learning_rate=5e-3, cutoff_len=384, logging_steps=2, val_size=4,
        eval_steps=every, group_by_length=True, strategy="single", overwrite=True,
        eval_ie=str(dev) if dev else None, eval_ie_every=every if dev else 0, eval_ie_task="re", eval_ie_max_new_tokens=96,
    )
    summary = sft(cfg, quiet=True)
    short = _short(summary)
    short["truncated"] = summary["data"]["truncated"]
    short["train_examples"] = summary["data"]["train_examples"]
    if dev:
        evals = [r for r in read_metrics(cfg.output) if "ie_relation_f1" in r]
        short["relation_f1_by_step"] = {r["step"]: round(r["ie_relation_f1"], 4) for r in evals}
        short["unparsed_answers_by_step"] = {r["step"]: r["ie_parse_failures"] for r in evals}
    return short
