"""Training recipes: continued pretraining and instruction tuning (LoRA, QLoRA, full), from one
process to multi-node ``torchrun`` with DDP, FSDP or DeepSpeed ZeRO.

Importing this package does not import torch (the recipes do, when they run), so reading a config
or ``knowlm train --help`` stays fast."""

from knowlm.train.config import PretrainConfig, SFTConfig, build_config
from knowlm.train.demo import demo_stage_pretrain, demo_stage_sft
from knowlm.train.pretrain import pretrain
from knowlm.train.sft import sft

__all__ = ["PretrainConfig", "SFTConfig", "build_config", "pretrain", "sft", "demo_stage_pretrain", "demo_stage_sft"]
