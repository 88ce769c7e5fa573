"""Edit metrics (EasyEdit's definitions), all teacher-forced token accuracies:

- reliability: the new target after the edit prompt;
- generalisation: the new target after each rephrase;
- locality: the fraction of predictions on unrelated prompts that the edit left unchanged
  (argmax tokens after vs before, along the expected answer); ``locality_acc`` also scores them
  against the expected answer;
- portability: the expected answer of reasoning/alias questions that follow from the new fact.
"""

from __future__ import annotations

from statistics import mean

from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target

MEASURES = ("reliability", "generalisation", "locality", "portability")


def predict(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16) -> list[tuple[list[int], list[int]]]:
    """For each (prompt, answer): argmax predictions at the answer's positions and the answer's tokens."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_with_target(tokenizer, p, a) for p, a in zip(prompts, answers)]
    results: list[tuple[list[int], list[int]]] = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        rows = [ids[:-1] for ids, _ in chunk]
        width = max(len(r) for r in rows)
        ids_t = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        with torch.no_grad():
            argmax = model(input_ids=ids_t, attention_mask=mask).logits.argmax(-1).tolist()
        for row, (ids, start) in zip(argmax, chunk):
            results.append((row[start - 1 : len(ids) - 1], ids[start:]))
    return results


def _acc(pred: list[int], gold: list[int]) -> float:
    return sum(p == g for p, g in zip(pred, gold)) / max(1, len(gold))


def measure(model, tokenizer, requests: list[EditRequest], contexts: list[str] | None = None) -> list[dict]:
    """Raw measurements per request (with locality predictions kept for the before/after comparison)."""
    contexts = contexts or [""] * len(requests)
    prompts, answers, owners = [], [], []
    for index, (request, ctx) in enumerate(zip(requests, contexts)):
        items = [("reliability", request.prompt, request.target_new)]
        items += [("generalisation", p, request.target_new) for p in request.rephrase_prompts]
        items += [("locality", p.prompt, p.answer) for p in request.locality]
        items += [("portability", p.prompt, p.answer) for p in request.portability]
        for kind, prompt, answer in items:
            prompts.append(ctx + prompt)
            answers.append(answer)
            owners.append((index, kind))
    predictions = predict(model, tokenizer, prompts, answers)
    out = [{"reliability": [], "generalisation": [], "locality_acc": [], "portability": [], "locality_preds": []}
           for _ in requests]
    for (index, kind), (pred, gold) in zip(owners, predictions):
        key = "locality_acc" if kind == "locality" else kind
        out[index][key].append(_acc(pred, gold))
        if kind == "locality":
            out[index]["locality_preds"].append(pred)
    return out


def summarise(raw: dict, before: dict | None = None) -> dict:
    """Per-request numbers: means of each list; locality compares with ``before``'s predictions."""
    result = {k: (mean(raw[k]) if raw[k] else None) for k in ("reliability", "generalisation", "locality_acc", "portability")}
    if before is not None and raw["locality_preds"]:
        same = [_acc(post, pre) for post, pre in zip(raw["locality_preds"], before["locality_preds"])]
        result["locality"] = mean(same)
    elif raw["locality_preds"]:
        result["locality"] = 1.0  # before any edit every prediction is, by definition, unchanged
    else:
        result["locality"] = None
    return result


def average(per_request: list[dict]) -> dict:
    keys = ("reliability", "generalisation", "locality", "locality_acc", "portability")
    out = {}
    for key in keys:
        values = [r[key] for r in per_request if r.get(key) is not None]
        out[key] = mean(values) if values else None
    return out


def table(pre: dict, post: dict) -> str:
    """A small fixed-width before/after table."""
    lines = [f"{'metric':<16}{'before':>8}{'after':>8}"]
    for key in ("reliability", "generalisation", "locality", "locality_acc", "portability"):
        fmt = lambda v: f"{v:8.3f}" if v is not None else f"{'-':>8}"  # noqa: E731
        lines.append(f"{key:<16}{fmt(pre.get(key))}{fmt(post.get(key))}")
    return "\n".join(lines)
