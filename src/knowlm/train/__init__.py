"""Training recipes: continued pretraining, instruction tuning (LoRA, QLoRA, full) and preference
tuning (DPO, ORPO), from one process to multi-node ``torchrun`` with DDP, FSDP or DeepSpeed ZeRO.

Importing this package does not import torch (the recipes do, when they run), so reading a config
or ``knowlm train --help`` stays fast."""

from knowlm.train.config import PreferenceConfig, PretrainConfig, SFTConfig, build_config
from knowlm.train.demo import demo_stage_pretrain, demo_stage_sft
from knowlm.train.pretrain import pretrain
from knowlm.train.sft import sft


def preference(cfg: PreferenceConfig, quiet: bool = False) -> dict:
    """DPO or ORPO (``cfg.objective``); see :mod:`knowlm.train.pref` (imported here lazily: it needs torch)."""
    from knowlm.train.pref import preference as run

    return run(cfg, quiet=quiet)


__all__ = ["PretrainConfig", "SFTConfig", "PreferenceConfig", "build_config", "pretrain", "sft", "preference",
           "demo_stage_pretrain", "demo_stage_sft"]
