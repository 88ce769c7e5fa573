"""Preference tuning recipes: DPO and ORPO on preference JSONL, with the shared setup/fit loop.

    from knowlm.train.pref import PreferenceConfig, preference
    preference(PreferenceConfig(model="zhixi-7b", data=["prefs.jsonl"], output="out", objective="dpo"))

DPO's reference model is the model as it starts: its log-probabilities of every chosen and
rejected answer are computed once before the first step (each process a slice, then gathered),
so no second model is kept in memory and LoRA, full fine-tuning and every engine work alike; a
resumed run computes them again from the same starting weights. Dropout is switched off, as
TRL does, so policy and reference agree exactly at step 0 (the first DPO loss is ln 2).
"""

from __future__ import annotations

import os

from knowlm.train.config import PreferenceConfig
from knowlm.train.objectives import PreferenceObjective
from knowlm.train.sampling import BlendedExamples, ConcatExamples, TrainData

GROUP_FACTOR = 50


def build_data(cfg: PreferenceConfig, tokenizer) -> TrainData:
    from knowlm.models import templates
    from knowlm.train.data_pref import collate_pairs, load_pref_sets, padding_pair

    cfg.template = templates.resolve(cfg.template, tokenizer)
    train, weights, evals, stats = load_pref_sets(cfg.data, tokenizer, cfg.template, cfg.cutoff_len, cfg.val_size, cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = GROUP_FACTOR * cfg.micro_batch_size * world if cfg.group_by_length else 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    info = {**stats.as_dict(), "train_pairs": sum(len(s) for s in train), "val_pairs": sum(len(s) for s in evals),
            "weights": weights, "cutoff_len": cfg.cutoff_len, "template": cfg.template, "objective": cfg.objective}
    return TrainData(train=BlendedExamples(train, weights, cfg.seed, group_size=group, blend_by="sequences"),
                     evals=ConcatExamples(evals) if evals else None, max_len=cfg.cutoff_len, info=info,
                     collate=collate_pairs, padding_example=padding_pair(pad_id))


class ReferencedPreference(PreferenceObjective):
    """The preference objective plus what it needs before the first step (no dropout; DPO references)."""

    def prepare(self, runtime, data: TrainData, cfg, pad_id: int) -> None:
        import torch

        for module in runtime.module.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if self.name != "dpo":
            return
        from knowlm.train.data_pref import collate_pairs, padding_pair
        from knowlm.train.evaluation import eval_slices
        from knowlm.train.objectives import sequence_logps

        sets = list(data.train.sets) + (list(data.evals.sets) if data.evals is not None else [])
        runtime.train(False)
        with torch.no_grad():
            for pairs in sets:
                mine = []
                for rows in eval_slices(len(pairs), cfg.micro_batch_size, runtime.env.world, runtime.env.rank):
                    batch = collate_pairs([[pairs.example(i)] for i in rows] or [[padding_pair(pad_id)]], data.max_len, pad_id)
                    logp, _, _ = sequence_logps(runtime, batch)
                    n = len(batch["pair_valid"])
                    mine += [(i, float(logp[k]), float(logp[n + k])) for k, i in enumerate(rows)]
                for part in runtime.gather_objects(mine):
                    for i, chosen, rejected in part:
                        pairs.ref[i] = (chosen, rejected)
        runtime.train(True)


def preference(cfg: PreferenceConfig, quiet: bool = False) -> dict:
    """Train and return the run summary (also written to ``OUTPUT/train_summary.json``)."""
    from knowlm.train.recipe import run

    objective = ReferencedPreference(cfg.objective, cfg.beta, cfg.label_smoothing)
    return run(cfg, cfg.objective, build_data, produced_by=f"knowlm train {cfg.objective}", quiet=quiet,
               objective=objective)
