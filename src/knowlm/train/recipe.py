"""The training recipe shared by pretraining and SFT: setup -> main -> fit -> finish.

Plain PyTorch loop (nanoGPT/litgpt style) rather than the HF Trainer: every engine (single,
DDP, FSDP2, DeepSpeed) is driven explicitly, the loss is the exact mean over all label tokens
of the global batch whatever the split over processes and micro-batches, and resume restores
the data position, schedule, optimizer and RNG so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from knowlm.errors import KnowlmError
from knowlm.train import checkpoint as ckpt
from knowlm.train.config import TrainConfig
from knowlm.train.distributed import Runtime, init_distributed, load_deepspeed_config, resolve_strategy, wrap
from knowlm.train.metrics import MetricsLogger, flops_per_token, peak_flops, plot_loss
from knowlm.train.modeling import check_method_available, count_parameters, load_for_training
from knowlm.train.sampling import BlendedExamples, ExampleStream, TrainData


class LRSchedule:
    """Linear warmup then cosine/linear decay to ``min_ratio * peak`` (or constant).

    Sets ``lr`` on the optimizer's param groups directly, so it works for torch optimizers and
    DeepSpeed's wrappers alike; its whole state is the step counter.
    """

    def __init__(self, optimizer, peak: float, warmup: int, total: int, kind: str, min_ratio: float):
        self.optimizer, self.peak, self.warmup, self.total = optimizer, peak, warmup, max(1, total)
        self.kind, self.min_ratio = kind, min_ratio
        self.steps = 0
        self.apply()

    def lr_at(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.peak
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1 - progress
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * decay)

    def apply(self) -> float:
        lr = self.lr_at(self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.steps += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.apply()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision in ("bf16", "fp16") and device.type != "cuda" and precision == "fp16":
        raise KnowlmError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
    return precision


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not -100."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def _label_count(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def prepare_output(cfg: TrainConfig, is_main: bool) -> Path | None:
    """Check the output directory; return the checkpoint to resume from, if any."""
    output = Path(cfg.output)
    if output.exists() and not output.is_dir():
        raise KnowlmError(f"--output {output} exists and is not a directory")
    latest = ckpt.latest_checkpoint(output)
    if cfg.resume:
        return latest
    if cfg.overwrite:
        if is_main and output.exists():  # other ranks only read the directory much later
            shutil.rmtree(ckpt.checkpoint_root(output), ignore_errors=True)
            for name in ("metrics.jsonl", "train_summary.json", "loss.png"):
                (output / name).unlink(missing_ok=True)
    elif latest is not None or (output / "metrics.jsonl").exists():
        raise KnowlmError(f"{output} holds an earlier run; pass --resume to continue it or --overwrite to start over")
    return None


def evaluate(runtime: Runtime, evals: BlendedExamples, cfg: TrainConfig, max_len: int, pad_id: int) -> float:
    """Mean token loss over (up to ``eval_max_batches`` global micro-batches of) the eval data."""
    stream = ExampleStream(evals, max_len, cfg.micro_batch_size, runtime.env.world, runtime.env.rank, False, pad_id)
    per_batch = cfg.micro_batch_size * runtime.env.world
    batches = min(cfg.eval_max_batches, math.ceil(evals.epoch_size / per_batch))
    total = count = 0.0
    runtime.train(False)
    with torch.no_grad():
        for _ in range(batches):
            batch = stream.next_batch()
            total += float(token_loss_sum(runtime.forward(batch), batch["labels"]))
            count += _label_count(batch)
    runtime.train(True)
    total, count = runtime.all_reduce_sum([total, count])
    return total / max(count, 1.0)


def run(cfg: TrainConfig, kind: str, build_data: Callable, produced_by: str, template: str | None = None,
        quiet: bool = False) -> dict:
    """setup -> main -> fit -> finish; returns the run summary (on every rank)."""
    # ---------------- setup: processes, output dir, data, model, engine ----------------
    check_method_available(cfg.method)
    strategy = resolve_strategy(cfg.strategy)
    env = init_distributed(strategy)
    precision = resolve_precision(cfg.precision, env.device)
    resume_from = prepare_output(cfg, env.is_main)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    ds_config = load_deepspeed_config(cfg.deepspeed, cfg, env.world, precision) if strategy == "deepspeed" else None
    model, tokenizer = load_for_training(cfg, env.device, torch.float32, ds_config)
    data: TrainData = build_data(cfg, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    runtime = wrap(strategy, env, model, cfg, precision, ds_config)
    trainable, total_params = count_parameters(runtime.module)

    stream = ExampleStream(data.train, data.max_len, cfg.micro_batch_size, env.world, env.rank, cfg.packing, pad_id)
    rows_per_step = cfg.micro_batch_size * cfg.gradient_accumulation_steps * env.world
    if cfg.max_steps > 0:
        total_steps = cfg.max_steps
    else:
        total_steps = max(1, math.ceil(cfg.epochs * stream.rows_per_epoch() / rows_per_step))
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    schedule = LRSchedule(runtime.optimizer, cfg.learning_rate, warmup, total_steps, cfg.lr_scheduler, cfg.min_lr_ratio)

    start_step, tokens_seen, elapsed_before = 0, 0, 0.0
    if resume_from is not None:
        state = ckpt.load_checkpoint(runtime, resume_from)
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before = state.get("elapsed_s", 0.0)
        stream.load_state_dict(state["stream"])
        schedule.load_state_dict(state["schedule"])
    elif cfg.resume and env.is_main and not quiet:
        print(f"note: no checkpoint in {output / 'checkpoints'}; starting from scratch")
    logger = MetricsLogger(output, env.is_main, start_step, cfg.tensorboard)
    sharding = runtime.gather_objects(runtime.sharding_report())

    # ---------------- main: the loop ----------------
    fpt = flops_per_token(getattr(runtime.module, "config", None) or model.config, data.max_len)
    peak = peak_flops(env.device)
    summary = fit(runtime, stream, data, cfg, schedule, logger, total_steps, start_step, tokens_seen,
                  elapsed_before, fpt, peak, pad_id, quiet)

    # ---------------- finish: weights, manifest, plot ----------------
    summary.update(
        kind=kind, output=str(output), strategy=strategy, precision=precision, world_size=env.world,
        method=cfg.method, trainable_params=trainable, total_params=total_params, resumed_from=str(resume_from) if resume_from else None,
        total_steps=total_steps, sharding=sharding, data=data.info, template=template,
    )
    if not summary["stopped_early"]:
        save_final(runtime, tokenizer, cfg, output, produced_by, template, summary)
    if env.is_main:
        if (output / "metrics.jsonl").exists():
            plot_loss(output / "metrics.jsonl", output / "loss.png", f"{kind}: {Path(cfg.model).name}")
            summary["loss_plot"] = str(output / "loss.png")
        (output / "train_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.close()
    runtime.barrier()
    return summary


def fit(runtime: Runtime, stream: ExampleStream, data: TrainData, cfg: TrainConfig, schedule: LRSchedule,
        logger: MetricsLogger, total_steps: int, start_step: int, tokens_seen: int, elapsed_before: float,
        fpt: float, peak: float | None, pad_id: int, quiet: bool) -> dict:
    from tqdm.auto import tqdm

    env = runtime.env
    tokens_at_start = tokens_seen
    runtime.train(True)
    step = start_step
    last_loss = eval_loss = None
    stopped = False
    window_tokens, window_start = 0, time.perf_counter()
    run_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=start_step, disable=not env.is_main or quiet, desc="train", unit="step")
    while step < total_steps:
        batches = [stream.next_batch() for _ in range(cfg.gradient_accumulation_steps)]
        labels_global, tokens_global = runtime.all_reduce_sum(
            [sum(_label_count(b) for b in batches), sum(b["num_tokens"] for b in batches)]
        )
        lr = schedule.optimizer.param_groups[0]["lr"]
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with runtime.no_sync(last):
                ce = token_loss_sum(runtime.forward(batch), batch["labels"])
                # DDP/FSDP/DeepSpeed average gradients over ranks: scale so the result is the
                # mean over every label token of the global batch.
                runtime.backward(ce * env.world / max(labels_global, 1.0), last)
            loss_sum += float(ce.detach())
        grad_norm = runtime.step()
        schedule.step()
        step += 1
        (loss_sum,) = runtime.all_reduce_sum([loss_sum])
        last_loss = loss_sum / max(labels_global, 1.0)
        tokens_seen += int(tokens_global)
        window_tokens += tokens_global
        bar.update(1)
        if not math.isfinite(last_loss):
            raise KnowlmError(f"loss became {last_loss} at step {step}; lower --learning-rate or check the data")

        if step % cfg.logging_steps == 0 or step == total_steps:
            now = time.perf_counter()
            tps = window_tokens / max(now - window_start, 1e-9)
            record = {"step": step, "epoch": round(stream.epoch, 4), "loss": last_loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens": tokens_seen, "tokens_per_s": tps,
                      "elapsed_s": elapsed_before + now - run_start}
            if peak:
                record["mfu"] = fpt * tps / (peak * env.world)
            logger.log(record)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            window_tokens, window_start = 0, now
        if data.evals is not None and cfg.eval_steps and step % cfg.eval_steps == 0 and step != total_steps:
            eval_loss = evaluate(runtime, data.evals, cfg, data.max_len, pad_id)
            logger.log({"step": step, "eval_loss": eval_loss})
        if cfg.save_steps and step % cfg.save_steps == 0 and step != total_steps:
            state = {"step": step, "tokens_seen": tokens_seen, "stream": stream.state_dict(),
                     "schedule": schedule.state_dict(), "strategy": runtime.strategy, "world_size": env.world,
                     "elapsed_s": elapsed_before + time.perf_counter() - run_start, "loss": last_loss,
                     "config": dataclasses.asdict(cfg)}
            ckpt.save_checkpoint(runtime, Path(cfg.output), step, state, cfg.save_total_limit)
        if cfg.stop_at_step and step >= cfg.stop_at_step and step < total_steps:
            stopped = True
            break
    bar.close()
    if data.evals is not None and not stopped:
        eval_loss = evaluate(runtime, data.evals, cfg, data.max_len, pad_id)
        logger.log({"step": step, "eval_loss": eval_loss})
    elapsed = time.perf_counter() - run_start
    return {"steps": step, "final_loss": last_loss, "eval_loss": eval_loss, "tokens": tokens_seen,
            "tokens_per_s": (tokens_seen - tokens_at_start) / max(elapsed, 1e-9),
            "elapsed_s": elapsed_before + elapsed, "stopped_early": stopped}


def save_final(runtime: Runtime, tokenizer, cfg: TrainConfig, output: Path, produced_by: str,
               template: str | None, summary: dict) -> None:
    """Write the trained weights (full model or PEFT adapter), tokenizer and ``knowlm.json``.

    Files are written to a temporary folder and moved into ``output`` together; ``knowlm.json``
    comes last, so its presence means the output is complete.
    """
    state = runtime.full_state_dict()  # collective
    if runtime.env.is_main:
        from knowlm.models import write_manifest

        tmp = output / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        module = runtime.module
        is_peft = hasattr(module, "peft_config")
        module.save_pretrained(str(tmp), state_dict=state)
        tokenizer.save_pretrained(str(tmp))
        source = Path(cfg.model)
        if (source / "tokenizer.model").is_file():
            shutil.copy2(source / "tokenizer.model", tmp / "tokenizer.model")
        if is_peft:
            check_adapter(tmp)
        elif runtime.architectures and (tmp / "config.json").is_file():
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            config["architectures"] = runtime.architectures  # not the engine's wrapper class name
            (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        (output / "knowlm.json").unlink(missing_ok=True)
        for item in tmp.iterdir():
            os.replace(item, output / item.name)
        tmp.rmdir()
        base = cfg.model
        write_manifest(
            output, produced_by=produced_by, arguments=dataclasses.asdict(cfg), template=template,
            base_model=base, method=cfg.method, adapter=is_peft,
            final_loss=summary.get("final_loss"), eval_loss=summary.get("eval_loss"), steps=summary.get("steps"),
        )
    runtime.barrier()


def check_adapter(directory: Path) -> int:
    """A saved adapter must hold non-empty LoRA tensors (ZeRO-3 partitioning can silently save empty ones)."""
    from safetensors import safe_open

    path = directory / "adapter_model.safetensors"
    if not path.is_file():
        raise KnowlmError(f"adapter was not saved: {path} missing")
    numel = 0
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        for key in keys:
            numel += math.prod(handle.get_slice(key).get_shape())
    if not keys or numel == 0:
        raise KnowlmError(f"saved adapter {path} is empty ({len(keys)} tensors, {numel} values)")
    return numel
