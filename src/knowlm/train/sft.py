"""Instruction-tuning recipe (KnowLM stage 2): alpaca-style records, LoRA by default.

    from knowlm.train import SFTConfig, sft
    sft(SFTConfig(model="knowlm-13b-base", data=["ie.jsonl"], output="out", template="alpaca"))

The template name is written to the output's ``knowlm.json``; ``knowlm.models.load`` and
``resolve_template`` read it back, so inference prompts exactly as training did.
"""

from __future__ import annotations

import os

from knowlm.train.config import SFTConfig
from knowlm.train.data_sft import load_sft_sets
from knowlm.train.sampling import BlendedExamples, ConcatExamples, TrainData

GROUP_FACTOR = 50  # mega-batch = 50 global micro-batches, as HF's length-grouped sampler


def build_data(cfg: SFTConfig, tokenizer) -> TrainData:
    from knowlm.models import templates

    cfg.template = templates.resolve(cfg.template, tokenizer)  # `auto` -> what knowlm.json records
    train, weights, evals, stats = load_sft_sets(
        cfg.data, tokenizer, cfg.template, cfg.cutoff_len, cfg.train_on_inputs, cfg.val_size, cfg.seed, cfg.mask_history
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = GROUP_FACTOR * cfg.micro_batch_size * world if cfg.group_by_length and not cfg.packing else 0
    info = {**stats.as_dict(), "train_examples": sum(len(s) for s in train),
            "val_examples": sum(len(s) for s in evals), "weights": weights, "blend_by": cfg.blend_by,
            "cutoff_len": cfg.cutoff_len, "template": cfg.template}
    return TrainData(
        train=BlendedExamples(train, weights, cfg.seed, group_size=group, blend_by=cfg.blend_by),
        evals=ConcatExamples(evals) if evals else None,
        max_len=cfg.cutoff_len,
        info=info,
    )


def sft(cfg: SFTConfig, quiet: bool = False) -> dict:
    """Train and return the run summary (also written to ``OUTPUT/train_summary.json``)."""
    from knowlm.train.recipe import run

    return run(cfg, "sft", build_data, produced_by="knowlm train sft", quiet=quiet)
