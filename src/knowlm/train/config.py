"""Training configuration: dataclass defaults < YAML preset < command-line flags.

One flat dataclass per recipe keeps every knob visible in one place. Each field carries its
help text (and flag aliases) as metadata, so the command line (:mod:`knowlm.train.options`),
YAML presets (``--config my.yaml`` or a shipped name such as ``sft_lora``) and Python callers
all see the same options with the same names.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knowlm.errors import KnowlmError
from knowlm.models.templates import DEFAULT_TEMPLATE

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STRATEGIES = ("auto", "single", "ddp", "fsdp", "deepspeed")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "bf16-pure")
SCHEDULERS = ("cosine", "linear", "constant")
METHODS = ("full", "lora", "qlora")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "flex_attention", "eager")
REPORTERS = ("tensorboard", "wandb", "mlflow")
OBJECTIVES = ("dpo", "orpo")
DEFAULT_SEQ_LEN = 1024


# --help groups options under these headings
MAIN, DATA, OPTIM, LORA, EVAL, SCALE = "Main", "Data", "Optimisation", "LoRA", "Evaluation, logging, checkpoints", "Scale-out and precision"


def opt(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (), choices: tuple[str, ...] | None = None,
        factory=None, cli: bool = True, panel: str = MAIN):
    """A config field with its command-line help; ``flags`` are extra spellings (``--lr``)."""
    metadata = {"help": help, "flags": flags, "choices": choices, "cli": cli, "panel": panel}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def override(cls, name: str, default: Any):
    """The field ``name`` of ``cls`` with another default (same help and flags)."""
    base = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field(default=default, metadata=base.metadata)


@dataclass
class TrainConfig:
    """Options shared by continued pretraining and instruction tuning."""

    model: str = opt("", "Model directory (HF layout) or hub id.", flags=("-m",), panel=MAIN)
    data: list[str] = opt(help="Training data; weighted blend: --data 0.7 A 0.3 B.", factory=list, panel=MAIN)
    output: str = opt("", "Output directory.", flags=("-o",), panel=MAIN)
    method: str = opt("full", "What to train (shortcuts: --full, --lora, --qlora).", choices=METHODS, panel=MAIN)
    save_dtype: str = opt("auto", "dtype of the saved weights; auto: the base model's (adapters: as trained).",
                          choices=SAVE_DTYPES, panel=MAIN)
    blend_by: str = opt("tokens", "What --data weights share out: tokens (Megatron) or sequences.",
                        choices=("tokens", "sequences"), panel=DATA)
    # optimisation
    learning_rate: float = opt(3e-4, "Peak learning rate.", flags=("--lr",), panel=OPTIM)
    weight_decay: float = opt(0.0, "AdamW weight decay.", panel=OPTIM)
    adam_beta1: float = opt(0.9, "AdamW beta1.", panel=OPTIM)
    adam_beta2: float = opt(0.95, "AdamW beta2.", panel=OPTIM)
    adam_eps: float = opt(1e-8, "AdamW epsilon.", panel=OPTIM)
    optim: str = opt("adamw", "Optimizer (8-bit ones need bitsandbytes and CUDA).", choices=OPTIMIZERS, panel=OPTIM)
    lr_scheduler: str = opt("cosine", "Learning-rate schedule after warmup.", choices=SCHEDULERS, panel=OPTIM)
    warmup_steps: int = opt(0, "Linear warmup steps (0: use --warmup-ratio).", panel=OPTIM)
    warmup_ratio: float = opt(0.0, "Warmup as a fraction of all steps, when --warmup-steps is 0.", panel=OPTIM)
    min_lr_ratio: float = opt(0.1, "Floor of the cosine/linear decay, as a fraction of the peak.", panel=OPTIM)
    max_grad_norm: float = opt(1.0, "Clip the gradient norm to this (0: no clipping).", panel=OPTIM)
    micro_batch_size: int = opt(4, "Rows per process per micro-step.", flags=("--batch-size",), panel=OPTIM)
    gradient_accumulation_steps: int = opt(1, "Micro-steps per optimizer step.", flags=("--grad-accum",), panel=OPTIM)
    max_steps: int = opt(-1, "Optimizer steps (> 0 wins over --epochs).", panel=OPTIM)
    epochs: float = opt(1.0, "Passes over the training data when --max-steps is not set.", panel=OPTIM)
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass to save memory.", panel=SCALE)
    checkpoint_every: int = opt(1, "With --gradient-checkpointing: recompute every N-th decoder layer only "
                                "(1: all; 2: half of them, more memory, less recompute).", panel=SCALE)
    precision: str = opt("auto", "auto: bf16 on capable GPUs, else fp32.", choices=PRECISIONS, panel=SCALE)
    seed: int = opt(42, "Random seed (data order, dropout, initialisation).", panel=SCALE)
    packing: bool = opt(False, "Pack several sequences into one row (they never attend to each other).", panel=DATA)
    # LoRA / QLoRA
    lora_r: int = opt(8, "LoRA rank.", panel=LORA)
    lora_alpha: int = opt(16, "LoRA alpha (scale = alpha / r).", panel=LORA)
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", panel=LORA)
    lora_target_modules: list[str] | None = opt(None, "Comma-separated module names; default every linear projection.", panel=LORA)
    use_dora: bool = opt(False, "DoRA: weight-decomposed LoRA (magnitude + direction).", panel=LORA)
    use_rslora: bool = opt(False, "rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.", panel=LORA)
    loraplus_lr_ratio: float = opt(0.0, "LoRA+: learning rate of the B matrices = ratio x that of A (0: off; paper: 16).", panel=LORA)
    merge_at_end: bool = opt(False, "Also write OUTPUT/merged: the base with the adapter merged in.", panel=LORA)
    # evaluation, logging, checkpoints
    eval_steps: int = opt(0, "Evaluate every N steps (0: only at the end, when there is eval data).", panel=EVAL)
    eval_max_examples: int = opt(0, "Evaluate on the first N eval examples (0: all of them, exactly once).", panel=EVAL)
    save_best: str | None = opt(None, "Keep the best model so far in OUTPUT/best, by this metric.", choices=("eval_loss", "ie_f1"), panel=EVAL)
    early_stopping_patience: int = opt(0, "Stop after N evaluations without a better --save-best metric (0: never).", panel=EVAL)
    early_stopping_threshold: float = opt(0.0, "An improvement must exceed this to count.", panel=EVAL)
    logging_steps: int = opt(10, "Log metrics every N steps.", panel=EVAL)
    save_steps: int = opt(0, "Checkpoint every N steps (0: no intermediate checkpoints).", panel=EVAL)
    save_total_limit: int = opt(2, "Keep this many newest checkpoints.", panel=EVAL)
    resume: bool = opt(False, "Continue from the last checkpoint in --output.", panel=EVAL)
    overwrite: bool = opt(False, "Discard an earlier run in --output.", panel=EVAL)
    tensorboard: bool = opt(False, "Also log to OUTPUT/tensorboard (same as --report-to tensorboard).", panel=EVAL)
    report_to: str | None = opt(None, "Also log to these, comma-separated: tensorboard, wandb, mlflow.", panel=EVAL)
    run_name: str | None = opt(None, "Run name for W&B/MLflow (default: the output directory's name).", panel=EVAL)
    # scale-out
    strategy: str = opt("auto", "Engine; auto: ddp under torchrun, else single.", choices=STRATEGIES, panel=SCALE)
    deepspeed: str | None = opt(None, "DeepSpeed JSON or preset: zero2 | zero3 | zero3_offload.", panel=SCALE)
    attn_implementation: str = opt("auto", "Attention kernels; auto: flash_attention_2 on CUDA when installed, else sdpa.",
                                   choices=ATTENTION, panel=SCALE)
    hub_kernels: bool = opt(False, "Let transformers fetch kernels from the Hub (off: training never needs the network).", panel=SCALE)
    compile: bool = opt(False, "torch.compile the model (first steps are slow while it compiles).", panel=SCALE)
    prefetch_steps: int = opt(-1, "Steps of batches built ahead in a background thread, pinned for the GPU "
                              "(-1: 2 on CUDA, 0 on CPU).", panel=SCALE)
    loss_chunk_size: int = opt(-1, "Tokens per cross-entropy chunk (-1: auto, ~128 MB of logits; 0: whole batch at once).", panel=SCALE)
    # Stop after this optimizer step as if the job had been killed (checkpoints only where
    # save_steps says): used to test resume and to fit runs into time-limited cluster slots.
    stop_at_step: int | None = opt(None, "Checkpointed stop after this step (for time-limited slots).", panel=SCALE)

    def validate(self) -> None:
        if not self.model:
            raise KnowlmError("--model is required")
        if not self.data:
            raise KnowlmError("--data is required")
        if not self.output:
            raise KnowlmError("--output is required")
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) is not None and getattr(self, f.name) not in allowed:
                raise KnowlmError(f"unknown {f.name} {getattr(self, f.name)!r}; choose one of: {', '.join(allowed)}")
        for name in ("micro_batch_size", "gradient_accumulation_steps", "logging_steps", "save_total_limit", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise KnowlmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise KnowlmError("set --max-steps or a positive --epochs")
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seeding range
            raise KnowlmError(f"--seed must be in 0..{2**32 - 1}, got {self.seed}")
        if self.learning_rate <= 0:
            raise KnowlmError(f"learning rate must be positive, got {self.learning_rate}")
        if self.deepspeed and self.strategy not in ("auto", "deepspeed"):
            raise KnowlmError(f"--deepspeed conflicts with --strategy {self.strategy}")
        if self.deepspeed:
            self.strategy = "deepspeed"
        if self.precision == "bf16-pure" and self.strategy == "deepspeed":
            raise KnowlmError("--precision bf16-pure: DeepSpeed keeps fp32 master weights itself; use --precision bf16 with it")
        if self.early_stopping_patience and not self.save_best:
            raise KnowlmError("--early-stopping-patience needs --save-best eval_loss|ie_f1 (the metric to watch)")
        if self.method == "full" and (self.use_dora or self.use_rslora or self.loraplus_lr_ratio or self.merge_at_end):
            raise KnowlmError("--use-dora, --use-rslora, --loraplus-lr-ratio and --merge-at-end apply to --lora/--qlora, not --full")
        for name in (self.report_to or "").split(","):
            if name.strip() and name.strip() not in REPORTERS:
                raise KnowlmError(f"unknown --report-to {name.strip()!r}; choose from: {', '.join(REPORTERS)}")


@dataclass
class PretrainConfig(TrainConfig):
    """Continued pretraining on Megatron-style indexed datasets (KnowLM stage 1: full fine-tuning)."""

    seq_len: int | None = opt(None, f"Tokens per sequence (default: the dataset's PREFIX.json, else {DEFAULT_SEQ_LEN}).", panel=DATA)
    eval_data: list[str] = opt(help="Indexed prefix(es) held out for evaluation.", factory=list, panel=DATA)
    eval_split: float = opt(0.0, "Fraction of documents of each --data prefix held out when no --eval-data.", panel=DATA)
    long_sequences: str = opt("continue", "A sequence longer than --seq-len continues into further samples "
                              "(Megatron) or is truncated (cut tokens are counted).", choices=("continue", "truncate"), panel=DATA)


@dataclass
class SFTConfig(TrainConfig):
    """Instruction tuning on alpaca-style JSONL (KnowLM stage 2: LoRA, alpaca-lora recipe)."""

    method: str = override(TrainConfig, "method", "lora")
    lr_scheduler: str = override(TrainConfig, "lr_scheduler", "linear")
    min_lr_ratio: float = override(TrainConfig, "min_lr_ratio", 0.0)
    adam_beta2: float = override(TrainConfig, "adam_beta2", 0.999)
    epochs: float = override(TrainConfig, "epochs", 3.0)
    blend_by: str = override(TrainConfig, "blend_by", "sequences")
    template: str = opt(DEFAULT_TEMPLATE, "Prompt template: alpaca, llama2, chatml, raw, or chat_template (the tokenizer's); "
                        "auto: the tokenizer's chat template when it has one, else alpaca.", panel=DATA)
    cutoff_len: int = opt(512, "Truncate examples to this many tokens.", panel=DATA)
    train_on_inputs: bool = opt(False, "Also learn the prompt tokens.", panel=DATA)
    mask_history: bool = opt(False, "Learn only the last answer of a multi-turn record (default: every assistant turn).", panel=DATA)
    neftune_noise_alpha: float = opt(0.0, "NEFTune: noise on the input embeddings while training (0: off; paper: 5).", panel=OPTIM)
    val_size: float = opt(0.0, "Validation examples: a count (>= 1) or a fraction.", panel=DATA)
    group_by_length: bool = opt(False, "Batch examples of similar length (less padding; ignored with --packing).", panel=DATA)
    eval_ie: str | None = opt(None, "Dev set of IE records (JSONL): extract with the model while training and log F1.", panel=EVAL)
    eval_ie_every: int = opt(0, "Run --eval-ie every N steps (0: only at the end).", panel=EVAL)
    eval_ie_task: str = opt("auto", "IE task(s) to evaluate; auto: every task the dev records annotate.",
                            choices=("auto", "ner", "re", "ee"), panel=EVAL)
    eval_ie_max_records: int = opt(0, "Use the first N dev records (0: all).", panel=EVAL)
    eval_ie_max_new_tokens: int = opt(128, "Answer length limit during --eval-ie.", panel=EVAL)


@dataclass
class PreferenceConfig(SFTConfig):
    """DPO/ORPO on preference pairs; the SFT options (template, LoRA, cutoff, ...) apply unchanged."""

    objective: str = opt("dpo", "Preference loss: dpo (against the starting model) or orpo (no reference).",
                         choices=OBJECTIVES, panel=MAIN)
    beta: float = opt(0.1, "DPO temperature / ORPO odds-ratio weight (TRL's beta).", panel=OPTIM)
    label_smoothing: float = opt(0.0, "DPO label smoothing (conservative DPO).", panel=OPTIM)
    learning_rate: float = override(SFTConfig, "learning_rate", 5e-5)
    epochs: float = override(SFTConfig, "epochs", 1.0)
    lora_dropout: float = override(SFTConfig, "lora_dropout", 0.0)

    def validate(self) -> None:
        super().validate()
        if self.packing:
            raise KnowlmError("--packing does not apply to preference pairs (each pair is two padded rows)")
        if self.beta <= 0:
            raise KnowlmError(f"--beta must be positive, got {self.beta}")


def config_keys(cls: type[TrainConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


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


def _check_keys(cls: type[TrainConfig], keys, where: str) -> None:
    known = config_keys(cls)
    unknown = sorted(set(keys) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise KnowlmError(f"unknown training option(s) in {where}: {', '.join(hints)}; valid options: {', '.join(sorted(known))}")


def build_config(cls: type[TrainConfig], config_file: str | None = None, overrides: dict[str, Any] | None = None):
    """Defaults, then the YAML file, then explicit overrides (flags the user actually gave)."""
    values: dict[str, Any] = {}
    if config_file:
        path = preset_path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KnowlmError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise KnowlmError(f"{path}: expected a mapping of option names to values")
        loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        _check_keys(cls, loaded, str(path))
        values.update(loaded)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(cls, given, "the arguments")
    values.update(given)
    for key in ("data", "eval_data"):
        if isinstance(values.get(key), (str, int, float)):
            values[key] = str(values[key]).split()
        if key in values:
            values[key] = [str(v) for v in values[key]]
    if isinstance(values.get("lora_target_modules"), str):
        values["lora_target_modules"] = split_modules(values["lora_target_modules"])
    config = cls(**values)
    config.validate()
    return config


def split_modules(value: str | list[str] | None) -> list[str] | None:
    """``"q_proj,v_proj"`` -> ``["q_proj", "v_proj"]``; empty or ``all-linear`` -> None (every linear layer)."""
    if value is None:
        return None
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()]
    return None if parts in ([], ["all-linear"]) else parts


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
