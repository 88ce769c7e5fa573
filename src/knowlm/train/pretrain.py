"""Continued pretraining recipe (KnowLM stage 1): a causal LM on blended indexed datasets.

    from knowlm.train import PretrainConfig, pretrain
    pretrain(PretrainConfig(model="llama-13b", data=["0.7", "zh", "0.3", "en"], output="out"))
"""

from __future__ import annotations

from knowlm.train.config import PretrainConfig
from knowlm.train.data_pretrain import load_pretrain_sets
from knowlm.train.sampling import BlendedExamples, ConcatExamples, TrainData


def build_data(cfg: PretrainConfig, tokenizer) -> TrainData:
    """Memory-mapped train/eval examples; the blend keeps the source proportions in every batch."""
    sets = load_pretrain_sets(cfg.data, cfg.seq_len, cfg.eval_data, cfg.eval_split, tokenizer, cfg.long_sequences)
    cfg.seq_len = sets.seq_len  # recorded resolved in checkpoints and knowlm.json
    return TrainData(
        train=BlendedExamples(sets.train, sets.weights, cfg.seed, blend_by=cfg.blend_by),
        evals=ConcatExamples(sets.evals) if sets.evals else None,
        max_len=sets.seq_len,
        info={**sets.info(), "blend_by": cfg.blend_by},
    )


def pretrain(cfg: PretrainConfig, quiet: bool = False) -> dict:
    """Train and return the run summary (also written to ``OUTPUT/train_summary.json``)."""
    from knowlm.train.recipe import run

    return run(cfg, "pretrain", build_data, produced_by="knowlm train pretrain", quiet=quiet)
