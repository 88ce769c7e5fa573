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

    summary = run(cfg, "sft", build_data, produced_by="knowlm train sft", quiet=quiet)
    record_ie_wording(cfg, summary)
    return summary


def data_ie_wording(data: list[str]) -> str | None:
    """The IE prompt wording every IE instruction of the data was written in (``kg2instruct --wording``
    and ``records_to_instructions`` mark compact records), or None when it is not one wording."""
    from knowlm.train.config import parse_weighted
    from knowlm.train.data_sft import expand_sources
    from knowlm.utils.jsonl import iter_jsonl

    found = set()
    for _, source in parse_weighted(data):
        for path in expand_sources(source):
            if path.suffix != ".json":
                found |= {str(r.get("wording") or "full") for r in iter_jsonl(path) if isinstance(r, dict) and r.get("task")}
    return found.pop() if len(found) == 1 else None


def record_ie_wording(cfg: SFTConfig, summary: dict) -> None:
    """Write ``ie_wording`` into the tuned model's ``knowlm.json`` so extraction asks it the way it learned."""
    import os

    wording = data_ie_wording(cfg.data)
    if wording and wording != "full" and not summary.get("stopped_early") and int(os.environ.get("RANK", "0")) == 0:
        from knowlm.models.manifest import update_manifest

        update_manifest(cfg.output, ie_wording=wording)
        summary["ie_wording"] = wording
