"""Training objectives: language modelling, DPO and ORPO, on the chunked token losses.

An objective says, for one micro-batch, how many units it holds (``counts``: label tokens,
preference pairs, ...) and the raw sums of its loss terms over those units (``sums``). The loop
adds the counts of the whole global batch first, so the loss ``sum_k sums[k] / total[k]`` is the
exact mean over the global batch however it is split over processes and micro-batches; evaluation
does the same over the whole eval set.

DPO and ORPO follow TRL's definitions (``DPOTrainer`` sigmoid loss, ``ORPOTrainer``):

- DPO: ``-log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))`` with summed response log-probs,
  ``label_smoothing`` mixing in the flipped term; rewards ``beta * (pi - ref)``.
- ORPO: ``NLL(chosen) - beta * log sigmoid(log_odds)``, ``log_odds = (c - r) - (log1p(-e^c) -
  log1p(-e^r))`` with per-token *mean* log-probs; the NLL is the mean over chosen answer tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from knowlm.train.config import OBJECTIVES
from knowlm.train.loss import label_positions


def combine(sums: dict, totals: dict) -> torch.Tensor | float:
    """``sum_k sums[k] / totals[k]``: one micro-batch's share of the global mean."""
    return sum(value / max(float(totals[key]), 1.0) for key, value in sums.items())


class LMObjective:
    """Causal language modelling: mean NLL over every label token."""

    name = "lm"
    extras_unit = "tokens"

    def counts(self, batch: dict) -> dict[str, int]:
        return {"tokens": int(label_positions(batch["labels"]).sum())}

    def sums(self, runtime, batch: dict) -> tuple[dict, dict]:
        return {"tokens": runtime.token_nll(batch).sum()}, {}


def sequence_logps(runtime, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed log-prob per row, label tokens per row, per-token NLL) of every row's answer."""
    nll = runtime.token_nll(batch)
    labels = batch["labels"].to(nll.device)
    rows = label_positions(labels).nonzero()[:, 0]
    n = labels.shape[0]
    logp = torch.zeros(n, dtype=nll.dtype, device=nll.device).index_add(0, rows, -nll)
    tokens = torch.zeros(n, dtype=nll.dtype, device=nll.device).index_add(0, rows, torch.ones_like(nll))
    return logp, tokens, nll


def dpo_loss(pi_c, pi_r, ref_c, ref_r, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair sigmoid DPO loss (TRL ``loss_type="sigmoid"``)."""
    logits = (pi_c - pi_r) - (ref_c - ref_r)
    return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing


def orpo_odds_term(mean_c, mean_r, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(``beta * log sigmoid(log_odds)`` per pair, ``log_odds``) from per-token mean log-probs (TRL ORPO)."""
    log_odds = (mean_c - mean_r) - (torch.log1p(-torch.exp(mean_c)) - torch.log1p(-torch.exp(mean_r)))
    return beta * F.logsigmoid(log_odds), log_odds


class PreferenceObjective:
    """DPO (against reference log-probs computed before training) or ORPO (no reference).

    A pair batch holds the chosen rows first, then the rejected rows; ``pair_valid`` marks real
    pairs (a process with no eval pair left feeds one padding pair that counts for nothing).
    """

    extras_unit = "pairs"

    def __init__(self, kind: str, beta: float, label_smoothing: float = 0.0):
        if kind not in OBJECTIVES:
            raise ValueError(kind)
        self.name, self.beta, self.label_smoothing = kind, beta, label_smoothing

    def counts(self, batch: dict) -> dict[str, int]:
        valid = batch["pair_valid"]
        out = {"pairs": int(valid.sum())}
        if self.name == "orpo":
            n = len(valid)
            chosen = label_positions(batch["labels"][:n])
            out["chosen_tokens"] = int(chosen[valid].sum())
        return out

    def sums(self, runtime, batch: dict) -> tuple[dict, dict]:
        logp, tokens, nll = sequence_logps(runtime, batch)
        valid = batch["pair_valid"].to(logp.device)
        n = len(valid)
        pi_c, pi_r = logp[:n], logp[n:]
        zero = torch.zeros((), device=logp.device)
        if self.name == "dpo":
            ref_c, ref_r = batch["ref_logps"].to(logp.device).unbind(1)
            losses = dpo_loss(pi_c, pi_r, ref_c, ref_r, self.beta, self.label_smoothing)
            reward_c, reward_r = self.beta * (pi_c - ref_c).detach(), self.beta * (pi_r - ref_r).detach()
            sums = {"pairs": torch.where(valid, losses, zero).sum()}
        else:
            mean_c, mean_r = pi_c / tokens[:n].clamp(min=1), pi_r / tokens[n:].clamp(min=1)
            odds, log_odds = orpo_odds_term(mean_c, mean_r, self.beta)
            rows = label_positions(batch["labels"].to(logp.device)).nonzero()[:, 0]
            keep = (rows < n) & valid[rows.clamp(max=n - 1)]  # NLL of the chosen answers only
            sums = {"chosen_tokens": (nll * keep).sum(), "pairs": torch.where(valid, -odds, zero).sum()}
            reward_c, reward_r = self.beta * mean_c.detach(), self.beta * mean_r.detach()
            extras_odds = float(torch.where(valid, log_odds.detach(), zero).sum())
        extras = {
            "rewards/chosen": float(torch.where(valid, reward_c, zero).sum()),
            "rewards/rejected": float(torch.where(valid, reward_r, zero).sum()),
            "rewards/margins": float(torch.where(valid, reward_c - reward_r, zero).sum()),
            "rewards/accuracies": float((valid & (reward_c > reward_r)).sum()),
        }
        if self.name == "orpo":
            extras["log_odds_ratio"] = extras_odds
        return sums, extras
