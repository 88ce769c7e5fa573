"""The optimisation loop shared by every recipe, and its learning-rate schedule.

The loss of a step is the objective's exact sum over the global batch divided by the global
counts (label tokens for language modelling, pairs for preference losses), whatever the split
over processes and micro-batches. Evaluation, best-checkpoint saving and early stopping are
driven by an :class:`~knowlm.train.evaluation.Evaluator`; checkpoints hold everything a resumed
run needs to continue exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.train import checkpoint as ckpt
from knowlm.train.batching import Prefetcher
from knowlm.train.objectives import combine


class LRSchedule:
    """Linear warmup then cosine/linear decay to ``min_ratio * peak`` (or constant).

    Sets ``lr`` on the optimizer's param groups directly (times a group's ``lr_scale``, which
    LoRA+ uses for its B matrices), so it works for torch optimizers and DeepSpeed's wrappers
    alike; its whole state is the step counter.
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
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.steps += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.apply()


def fit(runtime, stream, cfg, objective, schedule: LRSchedule, logger, evaluator, total_steps: int, start_step: int,
        tokens_seen: int, elapsed_before: float, fpt: float, peak: float | None, quiet: bool,
        window: dict | None = None, prefetch: int = 0) -> dict:
    """Train until ``total_steps`` (or ``--stop-at-step``, or early stopping); returns the loop's summary.

    The logged ``loss`` is the mean over every step since the previous log (``step_loss`` is the
    logging step's own); ``window`` carries that running sum across a resume.
    """
    from tqdm.auto import tqdm

    env = runtime.env
    tokens_at_start = tokens_seen
    runtime.train(True)
    step = start_step
    window = dict(window or {"loss_sum": 0.0, "steps": 0})
    bar = tqdm(total=total_steps, initial=start_step, disable=not env.is_main or quiet, desc="train", unit="step")
    feed = Prefetcher(stream, cfg.gradient_accumulation_steps, total_steps - start_step, prefetch, env.device.type == "cuda")
    try:
        summary = _steps(runtime, stream, feed, cfg, objective, schedule, logger, evaluator, total_steps, step, tokens_seen,
                         elapsed_before, fpt, peak, bar, window)
    finally:
        feed.close()
        bar.close()
    summary["tokens_per_s"] = (summary["tokens"] - tokens_at_start) / max(summary["loop_s"], 1e-9)
    return summary


def _steps(runtime, stream, feed, cfg, objective, schedule, logger, evaluator, total_steps, step, tokens_seen,
           elapsed_before, fpt, peak, bar, window) -> dict:
    env = runtime.env
    last_loss = None
    stopped = early = False
    evaluated_at = None
    window_tokens, window_start = 0, time.perf_counter()
    run_start = time.perf_counter()
    while step < total_steps:
        batches, stream_state = feed.next()
        counts = [objective.counts(b) for b in batches]
        keys = sorted(counts[0])
        reduced = runtime.all_reduce_sum([sum(c[k] for c in counts) for k in keys] + [sum(b["num_tokens"] for b in batches)])
        totals, tokens_global = dict(zip(keys, reduced[:-1])), reduced[-1]
        lr = schedule.optimizer.param_groups[0]["lr"] / schedule.optimizer.param_groups[0].get("lr_scale", 1.0)
        loss_sum = 0.0
        extras: dict[str, float] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with runtime.no_sync(last):
                sums, extra = objective.sums(runtime, batch)
                loss = combine(sums, totals)  # this micro-batch's share of the global-batch mean
                # DDP/FSDP/DeepSpeed average gradients over ranks: undo that average.
                runtime.backward(loss * env.world, last)
            loss_sum += float(loss.detach())
            for key, value in extra.items():
                extras[key] = extras.get(key, 0.0) + float(value)
        grad_norm = runtime.step()
        schedule.step()
        step += 1
        names = sorted(extras)
        reduced = runtime.all_reduce_sum([loss_sum] + [extras[k] for k in names])
        last_loss = reduced[0]
        unit = max(totals.get(objective.extras_unit, 1.0), 1.0)
        tokens_seen += int(tokens_global)
        window_tokens += tokens_global
        bar.update(1)
        if not math.isfinite(last_loss):
            raise KnowlmError(f"loss became {last_loss} at step {step}; lower --learning-rate or check the data")
        window["loss_sum"] += last_loss
        window["steps"] += 1

        if step % cfg.logging_steps == 0 or step == total_steps:
            now = time.perf_counter()
            tps = window_tokens / max(now - window_start, 1e-9)
            record = {"step": step, "epoch": round(stream.epoch_of(stream_state), 4), "loss": window["loss_sum"] / window["steps"],
                      "step_loss": last_loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens": tokens_seen, "tokens_per_s": tps,
                      "elapsed_s": elapsed_before + now - run_start}
            record.update({k: v / unit for k, v in zip(names, reduced[1:])})
            if peak:
                record["mfu"] = fpt * tps / (peak * env.world)
            logger.log(record)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            window_tokens, window_start = 0, now
            window = {"loss_sum": 0.0, "steps": 0}
        if step != total_steps and evaluator.due(step):
            evaluator.run(step)
            evaluated_at = step
            if evaluator.tracker.should_stop:
                early = True
        if cfg.save_steps and step % cfg.save_steps == 0 and step != total_steps and not early:
            state = {"step": step, "tokens_seen": tokens_seen, "stream": stream_state,
                     "schedule": schedule.state_dict(), "strategy": runtime.strategy, "world_size": env.world,
                     "elapsed_s": elapsed_before + time.perf_counter() - run_start, "loss": last_loss,
                     "best": evaluator.tracker.state_dict(), "log_window": window, "config": dataclasses.asdict(cfg)}
            ckpt.save_checkpoint(runtime, Path(cfg.output), step, state, cfg.save_total_limit)
        if early:
            break
        if cfg.stop_at_step and step >= cfg.stop_at_step and step < total_steps:
            stopped = True
            break
    elapsed = time.perf_counter() - run_start
    if not stopped and evaluated_at != step:
        evaluator.run(step, final=True)
    return {"steps": step, "final_loss": last_loss, "eval_loss": evaluator.last.get("eval_loss"), "tokens": tokens_seen,
            "loop_s": elapsed, "elapsed_s": elapsed_before + elapsed, "stopped_early": stopped, "early_stopping": early,
            "last_eval": dict(evaluator.last)}
