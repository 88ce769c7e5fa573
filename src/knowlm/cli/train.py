"""`knowlm train pretrain|sft`: thin wrappers over :mod:`knowlm.train`.

Every flag defaults to "not given" so that a ``--config`` YAML (or shipped preset) can set it
and an explicit flag still wins. ``--data`` takes several values: ``--data 0.7 zh 0.3 en``.
"""

from __future__ import annotations

from typing import Optional

import typer

from knowlm.errors import KnowlmError

train_app = typer.Typer(help="Continued pretraining and instruction tuning.\n\nExample: knowlm train sft --model M --data ie.jsonl --output out",
                        no_args_is_help=True)

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _data_tokens(given: list[str] | None, extra: list[str], flag: str = "--data") -> list[str] | None:
    """``--data 0.7 A 0.3 B`` arrives as ``--data 0.7`` plus extra args ``A 0.3 B``."""
    for token in extra:
        if token.startswith("-") and not _is_number(token):
            raise KnowlmError(f"unknown option {token}; see --help")
    tokens = list(given or []) + list(extra)
    return tokens or None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _method(lora: Optional[bool], qlora: Optional[bool], full: Optional[bool]) -> Optional[str]:
    chosen = [name for name, flag in (("lora", lora), ("qlora", qlora), ("full", full)) if flag]
    if len(chosen) > 1:
        raise KnowlmError(f"choose one of --lora, --qlora, --full (got {', '.join('--' + c for c in chosen)})")
    return chosen[0] if chosen else None


def _targets(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return None if parts in ([], ["all-linear"]) else parts


def _report(summary: dict) -> None:
    from knowlm.cli._common import console

    if summary.get("stopped_early"):
        console.print(f"Stopped after step {summary['steps']} as asked (--stop-at-step); resume with --resume.")
        return
    data = summary.get("data", {})
    cut = ""
    if "truncated" in data:
        cut = (f" {data['truncated']} of {data['records']} examples were cut to --cutoff-len {data['cutoff_len']}"
               f" and {data['dropped_no_answer']} dropped (prompt alone too long).")
    eval_part = f", eval loss {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else ""
    resumed = f" Resumed from {summary['resumed_from']}." if summary.get("resumed_from") else ""
    console.print(
        f"Trained {summary['kind']} ({summary['method']}, {summary['strategy']} x{summary['world_size']}, "
        f"{summary['precision']}) for {summary['steps']} steps on {summary['tokens']:,} tokens: final loss "
        f"{summary['final_loss']:.4f}{eval_part}; {summary['trainable_params']:,} of {summary['total_params']:,} "
        f"parameters trained.{cut}{resumed} Wrote {summary['output']} (metrics.jsonl, loss.png, knowlm.json)."
    )


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@train_app.command("pretrain", context_settings=EXTRA)
def pretrain_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model directory (HF layout) or hub id."),
    data: Optional[list[str]] = typer.Option(None, "--data", help="Indexed dataset prefix, or weighted blend: --data 0.7 zh 0.3 en."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output directory."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file or shipped preset (e.g. pretrain_llama_13b_zero3)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per sequence (default 1024)."),
    eval_data: Optional[list[str]] = typer.Option(None, "--eval-data", help="Indexed prefix held out for evaluation."),
    eval_split: Optional[float] = typer.Option(None, "--eval-split", help="Fraction of documents held out when no --eval-data."),
    lora: Optional[bool] = typer.Option(None, "--lora", help="Train a LoRA adapter instead of all weights."),
    full: Optional[bool] = typer.Option(None, "--full", help="Train all weights (default)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    lr_scheduler: Optional[str] = typer.Option(None, "--lr-scheduler", help="cosine | linear | constant"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio"),
    min_lr_ratio: Optional[float] = typer.Option(None, "--min-lr-ratio"),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm"),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", "--batch-size", help="Sequences per process per micro-step."),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, "--grad-accum", "--gradient-accumulation-steps"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16"),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="Pack several sequences into one row."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps"),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps"),
    save_steps: Optional[int] = typer.Option(None, "--save-steps"),
    save_total_limit: Optional[int] = typer.Option(None, "--save-total-limit"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue from the last checkpoint in --output."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Discard an earlier run in --output."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="auto | single | ddp | fsdp | deepspeed"),
    deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="DeepSpeed JSON or preset: zero2 | zero3 | zero3_offload."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard", help="Also log to OUTPUT/tensorboard."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r"),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha"),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout"),
    lora_target_modules: Optional[str] = typer.Option(None, "--lora-target-modules", help="Comma-separated; default all linear projections."),
    stop_at_step: Optional[int] = typer.Option(None, "--stop-at-step", help="Checkpointed stop after this step (for time-limited slots)."),
) -> None:
    """Continue pretraining a causal LM on indexed datasets (from `knowlm data prepare`).

    Example: knowlm train pretrain --model tiny --data 0.7 corpus/zh 0.3 corpus/en --output out --max-steps 100
    """
    from knowlm.train import PretrainConfig, build_config, pretrain

    overrides = dict(
        model=model, data=_data_tokens(data, ctx.args), output=output, seq_len=seq_len, eval_data=eval_data,
        eval_split=eval_split, method="lora" if lora else ("full" if full else None), learning_rate=learning_rate,
        weight_decay=weight_decay, lr_scheduler=lr_scheduler, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio,
        min_lr_ratio=min_lr_ratio, max_grad_norm=max_grad_norm, micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, max_steps=max_steps, epochs=epochs,
        gradient_checkpointing=gradient_checkpointing, precision=precision, packing=packing, seed=seed,
        logging_steps=logging_steps, eval_steps=eval_steps, save_steps=save_steps, save_total_limit=save_total_limit,
        resume=resume, overwrite=overwrite, strategy=strategy, deepspeed=deepspeed, tensorboard=tensorboard,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=_targets(lora_target_modules),
        stop_at_step=stop_at_step,
    )
    summary = pretrain(build_config(PretrainConfig, config, overrides))
    if _is_main():
        _report(summary)


@train_app.command("sft", context_settings=EXTRA)
def sft_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model directory (HF layout) or hub id."),
    data: Optional[list[str]] = typer.Option(None, "--data", help="Alpaca JSON/JSONL file or folder; weighted: --data 2 a.jsonl 1 b.jsonl."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output directory."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file or shipped preset (e.g. sft_lora, sft_oneke)."),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt template: alpaca (default), llama2, chatml, raw."),
    cutoff_len: Optional[int] = typer.Option(None, "--cutoff-len", help="Truncate examples to this many tokens (default 512)."),
    train_on_inputs: Optional[bool] = typer.Option(None, "--train-on-inputs/--no-train-on-inputs", help="Also learn the prompt tokens."),
    val_size: Optional[float] = typer.Option(None, "--val-size", help="Validation examples: a count (>= 1) or a fraction."),
    group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length"),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="Pack several examples into one row (no cross-attention)."),
    lora: Optional[bool] = typer.Option(None, "--lora", help="LoRA adapter (default)."),
    qlora: Optional[bool] = typer.Option(None, "--qlora", help="LoRA on a 4-bit NF4 base model (CUDA + bitsandbytes)."),
    full: Optional[bool] = typer.Option(None, "--full", help="Train all weights."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r"),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha"),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout"),
    lora_target_modules: Optional[str] = typer.Option(None, "--lora-target-modules", help="Comma-separated; default all linear projections."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    lr_scheduler: Optional[str] = typer.Option(None, "--lr-scheduler", help="cosine | linear | constant"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio"),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm"),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", "--batch-size", help="Examples per process per micro-step."),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, "--grad-accum", "--gradient-accumulation-steps"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps"),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps"),
    save_steps: Optional[int] = typer.Option(None, "--save-steps"),
    save_total_limit: Optional[int] = typer.Option(None, "--save-total-limit"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue from the last checkpoint in --output."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Discard an earlier run in --output."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="auto | single | ddp | fsdp | deepspeed"),
    deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="DeepSpeed JSON or preset: zero2 | zero3 | zero3_offload."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard", help="Also log to OUTPUT/tensorboard."),
    stop_at_step: Optional[int] = typer.Option(None, "--stop-at-step", help="Checkpointed stop after this step (for time-limited slots)."),
) -> None:
    """Instruction-tune a model on alpaca-style records (LoRA by default).

    Example: knowlm train sft --model tiny --data ie_train.jsonl --output ie-lora --template alpaca --epochs 3
    """
    from knowlm.train import SFTConfig, build_config, sft

    overrides = dict(
        model=model, data=_data_tokens(data, ctx.args), output=output, template=template, cutoff_len=cutoff_len,
        train_on_inputs=train_on_inputs, val_size=val_size, group_by_length=group_by_length, packing=packing,
        method=_method(lora, qlora, full), lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_target_modules=_targets(lora_target_modules), learning_rate=learning_rate, weight_decay=weight_decay,
        lr_scheduler=lr_scheduler, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
        micro_batch_size=micro_batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
        max_steps=max_steps, epochs=epochs, gradient_checkpointing=gradient_checkpointing, precision=precision,
        seed=seed, logging_steps=logging_steps, eval_steps=eval_steps, save_steps=save_steps,
        save_total_limit=save_total_limit, resume=resume, overwrite=overwrite, strategy=strategy,
        deepspeed=deepspeed, tensorboard=tensorboard, stop_at_step=stop_at_step,
    )
    summary = sft(build_config(SFTConfig, config, overrides))
    if _is_main():
        _report(summary)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
