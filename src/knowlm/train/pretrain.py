"""Continued pretraining recipe (KnowLM stage 1): a causal LM on blended indexed datasets.

    from knowlm.train import PretrainConfig, pretrain
    pretrain(PretrainConfig(model="llama-13b", data=["0.7", "zh", "0.3", "en"], output="out"))
"""

from __future__ import annotations

from knowlm.train.config import PretrainConfig
from knowlm.train.data_pretrain import load_pretrain_sets
from knowlm.train.recipe import TrainData, run
from knowlm.train.sampling import BlendedExamples


def build_data(cfg: PretrainConfig, tokenizer) -> TrainData:
    """Memory-mapped train/eval examples; the blend keeps the source proportions in every batch."""
    train, weights, evals = load_pretrain_sets(cfg.data, cfg.seq_len, cfg.eval_data, cfg.eval_split)
    info = {
        "sources": [{"prefix": s.name, "sequences": len(s), "tokens": s.num_tokens()} for s in train],
        "weights": weights,
        "eval_sequences": sum(len(s) for s in evals),
    }
    return TrainData(
        train=BlendedExamples(train, weights, cfg.seed),
        evals=BlendedExamples(evals, None, cfg.seed, shuffle=False) if evals else None,
        max_len=cfg.seq_len,
        info=info,
    )


def pretrain(cfg: PretrainConfig, quiet: bool = False) -> dict:
    """Train and return the run summary (also written to ``OUTPUT/train_summary.json``)."""
    return run(cfg, "pretrain", build_data, produced_by="knowlm train pretrain", template=None, quiet=quiet)
