"""The training recipe shared by every objective: setup -> fit -> finish.

Plain PyTorch loop (nanoGPT/litgpt style) rather than the HF Trainer: every engine (single,
DDP, FSDP2, DeepSpeed) is driven explicitly, the loss is the exact mean over the global batch
whatever the split over processes and micro-batches, and resume restores the data position,
schedule, optimizer, RNG and best-so-far so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch

from knowlm.errors import KnowlmError
from knowlm.train import checkpoint as ckpt
from knowlm.train.batching import ExampleStream
from knowlm.train.config import TrainConfig
from knowlm.train.distributed import init_distributed, load_deepspeed_config, resolve_strategy, wrap
from knowlm.train.evaluation import BestTracker, Evaluator
from knowlm.train.loop import LRSchedule, fit
from knowlm.train.objectives import LMObjective
from knowlm.train.metrics import MetricsLogger, flops_per_token, peak_flops, plot_loss
from knowlm.train.modeling import check_method_available, count_parameters, load_for_training
from knowlm.train.optim import check_optimizer
from knowlm.train.output import merge_adapter, prepare_output, save_model
from knowlm.train.reporters import check_available as check_reporters
from knowlm.train.sampling import TrainData


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise KnowlmError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
    return precision


def prefetch_depth(prefetch_steps: int, device: torch.device) -> int:
    """-1 (auto): two steps ahead on CUDA, where building batches would otherwise idle the GPU; none on CPU."""
    if prefetch_steps >= 0:
        return prefetch_steps
    return 2 if device.type == "cuda" else 0


def _check_setup(cfg: TrainConfig, strategy: str, has_evals: bool) -> None:
    if cfg.save_best == "eval_loss" and not has_evals:
        raise KnowlmError("--save-best eval_loss needs evaluation data (--val-size for sft, --eval-split/--eval-data for pretrain)")
    if cfg.save_best == "ie_f1" and not getattr(cfg, "eval_ie", None):
        raise KnowlmError("--save-best ie_f1 needs --eval-ie DEV.jsonl (sft, dpo, orpo)")
    if getattr(cfg, "eval_ie", None) and (strategy == "fsdp" or (strategy == "deepspeed" and cfg.deepspeed in (None, "zero3", "zero3_offload"))):
        raise KnowlmError("--eval-ie generates with the whole model on every process: use --strategy single/ddp or --deepspeed zero2")
    if cfg.compile and strategy == "deepspeed":
        raise KnowlmError("--compile is not supported with DeepSpeed here; use --strategy single/ddp/fsdp")
    if cfg.merge_at_end and cfg.method == "qlora":
        raise KnowlmError("--merge-at-end merges into the unquantized base; with --qlora merge later with `knowlm weights merge-lora`")


def run(cfg: TrainConfig, kind: str, build_data: Callable, produced_by: str, quiet: bool = False, objective=None) -> dict:
    """setup -> fit -> finish; returns the run summary (on every rank)."""
    # ---------------- setup: processes, output dir, data, model, engine ----------------
    check_method_available(cfg.method)
    strategy = resolve_strategy(cfg.strategy)
    env = init_distributed(strategy)
    check_optimizer(cfg.optim, env.device)
    check_reporters(cfg)
    precision = resolve_precision(cfg.precision, env.device)
    resume_from = prepare_output(cfg, env.is_main)
    output = Path(cfg.output)
    torch.manual_seed(cfg.seed)

    ds_config = load_deepspeed_config(cfg.deepspeed, cfg, env.world, precision) if strategy == "deepspeed" else None
    model, tokenizer = load_for_training(cfg, env.device, precision, strategy, ds_config)
    data: TrainData = build_data(cfg, tokenizer)
    _check_setup(cfg, strategy, data.evals is not None)
    output.mkdir(parents=True, exist_ok=True)  # only now: bad data or options leave no empty output behind
    template = getattr(cfg, "template", None)  # resolved by the data setup (``auto``)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    runtime = wrap(strategy, env, model, cfg, precision, ds_config)
    trainable, total_params = count_parameters(runtime.module)
    objective = objective or LMObjective()

    stream = ExampleStream(data.train, data.max_len, cfg.micro_batch_size, env.world, env.rank, cfg.packing, pad_id,
                           data.collate)
    rows_per_step = cfg.micro_batch_size * cfg.gradient_accumulation_steps * env.world
    if cfg.max_steps > 0:
        total_steps = cfg.max_steps
    else:
        total_steps = max(1, math.ceil(cfg.epochs * stream.rows_per_epoch() / rows_per_step))
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    schedule = LRSchedule(runtime.optimizer, cfg.learning_rate, warmup, total_steps, cfg.lr_scheduler, cfg.min_lr_ratio)
    tracker = BestTracker(cfg.save_best, cfg.early_stopping_patience, cfg.early_stopping_threshold)

    if hasattr(objective, "prepare"):  # e.g. DPO's reference log-probs: from the starting weights, before resuming
        objective.prepare(runtime, data, cfg, pad_id)
    start_step, tokens_seen, elapsed_before, window = 0, 0, 0.0, None
    if resume_from is not None:
        state = ckpt.load_checkpoint(runtime, resume_from)
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before = state.get("elapsed_s", 0.0)
        stream.load_state_dict(state["stream"])
        schedule.load_state_dict(state["schedule"])
        tracker.load_state_dict(state.get("best", {}))
        window = state.get("log_window")
    elif cfg.resume and env.is_main and not quiet:
        print(f"note: no checkpoint in {output / 'checkpoints'}; starting from scratch")
    logger = MetricsLogger(output, env.is_main, start_step, cfg, kind)
    sharding = runtime.gather_objects(runtime.sharding_report())

    def save_best(step: int, metrics: dict) -> None:
        save_model(runtime, tokenizer, cfg, output / "best", produced_by, template,
                   {"steps": step, "eval_loss": metrics.get("eval_loss"),
                    "best": {"metric": cfg.save_best, "value": metrics.get(cfg.save_best), "step": step}})

    ie = None
    if getattr(cfg, "eval_ie", None):
        from knowlm.train.ie_eval import IEEvaluator

        ie = IEEvaluator.from_config(cfg, tokenizer, template)
    evaluator = Evaluator(runtime, data, cfg, objective, pad_id, tracker, logger, ie, save_best)

    # ---------------- fit ----------------
    fpt = flops_per_token(getattr(runtime.module, "config", None) or model.config, data.max_len)
    summary = fit(runtime, stream, cfg, objective, schedule, logger, evaluator, total_steps, start_step, tokens_seen,
                  elapsed_before, fpt, peak_flops(env.device), quiet, window, prefetch_depth(cfg.prefetch_steps, env.device))

    # ---------------- finish: weights, manifest, plot ----------------
    summary.update(
        kind=kind, output=str(output), strategy=strategy, precision=precision, world_size=env.world,
        method=cfg.method, trainable_params=trainable, total_params=total_params, resumed_from=str(resume_from) if resume_from else None,
        total_steps=total_steps, sharding=sharding, data=data.info, template=template, best=tracker.summary(),
    )
    if tracker.best_step is not None:
        summary["best"]["path"] = str(output / "best")
    if not summary["stopped_early"]:
        save_model(runtime, tokenizer, cfg, output, produced_by, template, summary)
        if cfg.merge_at_end and env.is_main:
            summary["merged"] = str(merge_adapter(cfg, output))
        runtime.barrier()
    if env.is_main:
        if (output / "metrics.jsonl").exists():
            plot_loss(output / "metrics.jsonl", output / "loss.png", _title(kind, cfg, template))
            summary["loss_plot"] = str(output / "loss.png")
        (output / "train_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.close()
    runtime.barrier()
    return summary


def _title(kind: str, cfg: TrainConfig, template: str | None) -> str:
    """``sft (lora, alpaca) of tiny -> out``: what the picture is of."""
    what = ", ".join(x for x in (cfg.method, template) if x)
    return f"{kind} ({what}) of {Path(cfg.model).name} -> {Path(cfg.output).name}"
