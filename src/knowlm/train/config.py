"""Training configuration: dataclass defaults < YAML preset < command-line flags.

One flat dataclass per recipe keeps every knob visible in one place and lets a YAML file
(``--config my.yaml`` or a shipped preset name such as ``sft_lora``) set any of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knowlm.errors import KnowlmError
from knowlm.models.templates import DEFAULT_TEMPLATE

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STRATEGIES = ("auto", "single", "ddp", "fsdp", "deepspeed")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant")
METHODS = ("full", "lora", "qlora")


@dataclass
class TrainConfig:
    """Options shared by continued pretraining and instruction tuning."""

    model: str = ""
    data: list[str] = field(default_factory=list)  # "PREFIX" or weighted: ["0.7", "A", "0.3", "B"]
    output: str = ""
    method: str = "full"  # full | lora | qlora
    # optimisation
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    min_lr_ratio: float = 0.1  # cosine/linear decay floor, as a fraction of the peak
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4  # per process
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # > 0 wins over epochs
    epochs: float = 1.0
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto (bf16 on capable GPUs, else fp32) | fp32 | bf16 | fp16
    seed: int = 42
    packing: bool = False
    # LoRA / QLoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None  # None: every linear projection ("all-linear")
    # evaluation, logging, checkpoints
    eval_steps: int = 0  # 0: evaluate only at the end (when there is eval data)
    eval_max_batches: int = 50
    logging_steps: int = 10
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int = 2
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = False
    # scale-out
    strategy: str = "auto"  # auto | single | ddp | fsdp | deepspeed
    deepspeed: str | None = None  # JSON path or shipped name: zero2 | zero3 | zero3_offload
    # Stop after this optimizer step as if the job had been killed (checkpoints only where
    # save_steps says): used to test resume and to fit runs into time-limited cluster slots.
    stop_at_step: int | None = None

    def validate(self) -> None:
        if not self.model:
            raise KnowlmError("--model is required")
        if not self.data:
            raise KnowlmError("--data is required")
        if not self.output:
            raise KnowlmError("--output is required")
        for name, allowed in (
            ("strategy", STRATEGIES),
            ("precision", PRECISIONS),
            ("lr_scheduler", SCHEDULERS),
            ("method", METHODS),
        ):
            if getattr(self, name) not in allowed:
                raise KnowlmError(f"unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        for name in ("micro_batch_size", "gradient_accumulation_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise KnowlmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise KnowlmError("set --max-steps or a positive --epochs")
        if self.learning_rate <= 0:
            raise KnowlmError(f"learning rate must be positive, got {self.learning_rate}")
        if self.deepspeed and self.strategy not in ("auto", "deepspeed"):
            raise KnowlmError(f"--deepspeed conflicts with --strategy {self.strategy}")
        if self.deepspeed:
            self.strategy = "deepspeed"


@dataclass
class PretrainConfig(TrainConfig):
    """Continued pretraining on Megatron-style indexed datasets (KnowLM stage 1: full fine-tuning)."""

    seq_len: int = 1024
    eval_data: list[str] = field(default_factory=list)  # indexed prefixes held out for evaluation
    eval_split: float = 0.0  # fraction of documents of each --data prefix held out when no eval_data


@dataclass
class SFTConfig(TrainConfig):
    """Instruction tuning on alpaca-style JSONL (KnowLM stage 2: LoRA, alpaca-lora recipe)."""

    method: str = "lora"
    learning_rate: float = 3e-4
    lr_scheduler: str = "linear"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    epochs: float = 3.0
    template: str = DEFAULT_TEMPLATE
    cutoff_len: int = 512
    train_on_inputs: bool = False
    val_size: float = 0.0  # >= 1: number of examples; < 1: fraction
    group_by_length: bool = False


def preset_path(name: str) -> Path:
    """A YAML file path, or the shipped preset of that name (``sft_lora`` -> configs/sft_lora.yaml)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise KnowlmError(f"config {name!r} not found; give a YAML file or a shipped preset: {', '.join(names)}")


def build_config(cls: type[TrainConfig], config_file: str | None = None, overrides: dict[str, Any] | None = None):
    """Defaults, then the YAML file, then explicit overrides (flags the user actually gave)."""
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_file:
        path = preset_path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KnowlmError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise KnowlmError(f"{path}: expected a mapping of option names to values")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise KnowlmError(f"unknown training option(s): {', '.join(unknown)}")
    for key in ("data", "eval_data"):
        if isinstance(values.get(key), (str, int, float)):
            values[key] = str(values[key]).split()
        if key in values:
            values[key] = [str(v) for v in values[key]]
    config = cls(**values)
    config.validate()
    return config


def parse_weighted(tokens: list[str], flag: str = "--data") -> list[tuple[float | None, str]]:
    """``["0.7", "A", "0.3", "B"]`` -> ``[(0.7, "A"), (0.3, "B")]``; ``["A", "B"]`` -> ``[(None, "A"), (None, "B")]``.

    Weights are either given for every source or for none (Megatron's convention).
    """
    tokens = [t for t in tokens if t != ""]
    if not tokens:
        raise KnowlmError(f"{flag} needs at least one source")

    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    if number(tokens[0]) is None:
        if any(number(t) is not None and not Path(t).exists() for t in tokens):
            raise KnowlmError(f"{flag}: give a weight before every source or none at all: {' '.join(tokens)}")
        return [(None, t) for t in tokens]
    if len(tokens) % 2:
        raise KnowlmError(f"{flag}: weighted sources come in pairs 'WEIGHT SOURCE', got {' '.join(tokens)}")
    pairs = []
    for weight, source in zip(tokens[::2], tokens[1::2]):
        value = number(weight)
        if value is None or value <= 0:
            raise KnowlmError(f"{flag}: weight must be a positive number, got {weight!r}")
        pairs.append((value, source))
    return pairs
