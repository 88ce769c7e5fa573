"""Evaluation while training: exact held-out loss, best-checkpoint tracking and early stopping.

The eval loss is the mean over every label token of exactly the eval set: processes take
consecutive slices of each global micro-batch, the last batch is partial (a process with no row
left runs one padding row that carries no label, so collective engines stay in step), and sums
are reduced before dividing. The figure is the same for any micro-batch size and process count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from knowlm.errors import KnowlmError
from knowlm.train.batching import collate
from knowlm.train.objectives import combine
from knowlm.train.sampling import ConcatExamples

SAVE_BEST = ("eval_loss", "ie_f1")


def eval_slices(n: int, micro_batch_size: int, world: int, rank: int) -> list[range]:
    """This process's example ranges, one per global eval micro-batch (possibly empty at the end)."""
    per_batch = micro_batch_size * world
    out = []
    for start in range(0, n, per_batch):
        lo = min(n, start + rank * micro_batch_size)
        out.append(range(lo, min(n, lo + micro_batch_size)))
    return out


def evaluate_loss(runtime, evals: ConcatExamples, objective, micro_batch_size: int, max_len: int, pad_id: int,
                  max_examples: int = 0, collate_fn=None, padding_example=None) -> float:
    """Mean objective over the eval set (or its first ``max_examples`` examples)."""
    n = len(evals) if max_examples <= 0 else min(len(evals), max_examples)
    pad = padding_example if padding_example is not None else (np.array([pad_id]), np.array([-100]))
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    runtime.train(False)
    with torch.no_grad():
        for rows in eval_slices(n, micro_batch_size, runtime.env.world, runtime.env.rank):
            examples = [[evals.example(i)] for i in rows] or [[pad]]
            batch = collate_fn(examples, max_len, pad_id) if collate_fn else collate(examples, max_len, pad_id, False)
            part, _ = objective.sums(runtime, batch)
            for key, value in part.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            for key, value in objective.counts(batch).items():
                counts[key] = counts.get(key, 0.0) + value
    runtime.train(True)
    keys = sorted(sums)
    reduced = runtime.all_reduce_sum([sums[k] for k in keys] + [counts[k] for k in keys])
    return float(combine(dict(zip(keys, reduced[:len(keys)])), dict(zip(keys, reduced[len(keys):]))))


@dataclass
class BestTracker:
    """The best value of the ``--save-best`` metric so far, and early stopping's patience counter."""

    metric: str | None = None
    patience: int = 0  # evaluations without improvement before stopping (0: never stop early)
    threshold: float = 0.0  # an improvement must beat the best by more than this
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in SAVE_BEST:
            raise KnowlmError(f"unknown --save-best {self.metric!r}; choose one of: {', '.join(SAVE_BEST)}")

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "ie_f1"

    def update(self, step: int, metrics: dict) -> bool:
        """Record an evaluation; True when it is a new best (the caller saves the model)."""
        if self.metric is None or metrics.get(self.metric) is None or not math.isfinite(metrics[self.metric]):
            return False
        value = float(metrics[self.metric])
        self.history.append((step, value))
        if self.best is None:
            better = True
        elif self.higher_is_better:
            better = value > self.best + self.threshold
        else:
            better = value < self.best - self.threshold
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.history = [tuple(h) for h in state.get("history", [])]

    def summary(self) -> dict | None:
        if self.metric is None:
            return None
        return {"metric": self.metric, "value": self.best, "step": self.best_step,
                "stopped_early": self.should_stop}


class Evaluator:
    """Runs what is due at a step (eval loss every ``eval_steps``, IE extraction every
    ``eval_ie_every``), logs it, tracks the best value and saves the best model through ``on_best``."""

    def __init__(self, runtime, data, cfg, objective, pad_id: int, tracker: BestTracker, logger, ie=None, on_best=None):
        self.runtime, self.data, self.cfg, self.objective, self.pad_id = runtime, data, cfg, objective, pad_id
        self.tracker, self.logger, self.ie, self.on_best = tracker, logger, ie, on_best
        self.last: dict = {}

    def _loss_due(self, step: int) -> bool:
        return self.data.evals is not None and bool(self.cfg.eval_steps) and step % self.cfg.eval_steps == 0

    def _ie_due(self, step: int) -> bool:
        return self.ie is not None and bool(self.ie.every) and step % self.ie.every == 0

    def due(self, step: int) -> bool:
        return self._loss_due(step) or self._ie_due(step)

    def run(self, step: int, final: bool = False) -> dict:
        metrics: dict = {}
        if self.data.evals is not None and (final or self._loss_due(step)):
            metrics["eval_loss"] = evaluate_loss(
                self.runtime, self.data.evals, self.objective, self.cfg.micro_batch_size, self.data.max_len, self.pad_id,
                self.cfg.eval_max_examples, self.data.collate, self.data.padding_example)
        if self.ie is not None and (final or self._ie_due(step)):
            metrics.update(self.ie.evaluate(self.runtime))
        if not metrics:
            return metrics
        self.logger.log({"step": step, **metrics})
        self.last.update(metrics)
        if self.tracker.update(step, metrics) and self.on_best is not None:
            self.on_best(step, metrics)
        return metrics
