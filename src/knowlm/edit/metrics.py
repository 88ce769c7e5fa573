"""Edit metrics with EasyEdit's definitions:

- reliability: teacher-forced token accuracy of the new target after the edit prompt;
- generalisation: the same after each rephrase;
- locality: per category (KnowEdit: Relation_Specificity, Forgetfulness; CounterFact: neighborhood),
  the fraction of predictions along the expected answer that the edit left unchanged (argmax
  after vs before); ``locality_acc`` scores them against the expected answer instead;
- portability: per category (Reasoning, Subject_Aliasing, multi_hop...), token accuracy of the
  expected answer;
- fluency (optional): n-gram entropy of 100 tokens sampled after the edit prompt.

A request's locality (portability) is the mean of its category means, as KnowEdit's evaluation
averages; the category figures are also reported. GRACE is measured by greedy generation of as
many tokens as the answer has (EasyEdit's ``vanilla_generation``) because its codebook is read at
the last token of each forward.
"""

from __future__ import annotations

from statistics import mean
from typing import Callable

from knowlm.edit.requests import EditRequest
from knowlm.edit.tokens import encode_with_target

KEYS = ("reliability", "generalisation", "locality", "locality_acc", "portability")


def predict(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16,
            generate: bool = False) -> list[tuple[list[int], list[int]]]:
    """For each (prompt, answer): the model's tokens along the answer and the answer's tokens.

    Teacher-forced argmax by default; with ``generate`` greedy decoding from the prompt alone."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_with_target(tokenizer, p, a) for p, a in zip(prompts, answers)]
    results: list[tuple[list[int], list[int]]] = []
    if generate:
        for ids, start in encoded:
            prompt = torch.tensor([ids[:start]], device=device)
            with torch.no_grad():
                out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=len(ids) - start, min_new_tokens=len(ids) - start,
                                     pad_token_id=pad, use_cache=True)
            results.append((out[0, start:].tolist(), ids[start:]))
        return results
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


def measure(model, tokenizer, requests: list[EditRequest], contexts: list[str] | None = None,
            wrap: Callable[[str], str] = lambda t: t, generate: bool = False) -> list[dict]:
    """Raw measurements per request (locality predictions kept for the before/after comparison)."""
    contexts = contexts or [""] * len(requests)
    prompts, answers, owners = [], [], []
    for index, (request, ctx) in enumerate(zip(requests, contexts)):
        items = [("reliability", None, request.prompt, request.target_new)]
        items += [("generalisation", None, p, request.target_new) for p in request.rephrase_prompts]
        items += [("locality", p.category, p.prompt, p.answer) for p in request.locality]
        items += [("portability", p.category, p.prompt, p.answer) for p in request.portability]
        for kind, category, prompt, answer in items:
            prompts.append(wrap(ctx + prompt))
            answers.append(answer)
            owners.append((index, kind, category))
    predictions = predict(model, tokenizer, prompts, answers, generate=generate)
    out = [{"reliability": [], "generalisation": [], "locality_acc": {}, "portability": {}, "locality_preds": {}}
           for _ in requests]
    for (index, kind, category), (pred, gold) in zip(owners, predictions):
        if kind in ("reliability", "generalisation"):
            out[index][kind].append(_acc(pred, gold))
        elif kind == "portability":
            out[index]["portability"].setdefault(category, []).append(_acc(pred, gold))
        else:
            out[index]["locality_acc"].setdefault(category, []).append(_acc(pred, gold))
            out[index]["locality_preds"].setdefault(category, []).append(pred)
    return out


def _means(groups: dict[str, list[float]]) -> dict[str, float]:
    return {k: mean(v) for k, v in groups.items() if v}


def summarise(raw: dict, before: dict | None = None) -> dict:
    """Per-request numbers. Locality compares with ``before``'s predictions (1.0 by definition when
    there is no before); category figures are the means within a category."""
    result = {k: (mean(raw[k]) if raw[k] else None) for k in ("reliability", "generalisation")}
    portability = _means(raw["portability"])
    locality_acc = _means(raw["locality_acc"])
    if before is not None:
        locality = {c: mean(_acc(post, pre) for post, pre in zip(preds, before["locality_preds"][c]))
                    for c, preds in raw["locality_preds"].items() if preds}
    else:
        locality = {c: 1.0 for c, preds in raw["locality_preds"].items() if preds}
    result["locality"] = mean(locality.values()) if locality else None
    result["locality_acc"] = mean(locality_acc.values()) if locality_acc else None
    result["portability"] = mean(portability.values()) if portability else None
    result["locality_by_category"] = locality
    result["portability_by_category"] = portability
    if "fluency" in raw:
        result["fluency"] = raw["fluency"]
    return result


def average(per_request: list[dict]) -> dict:
    """Means over requests; a category's mean is over the requests that have it."""
    out: dict = {}
    for key in (*KEYS, "fluency"):
        values = [r[key] for r in per_request if r.get(key) is not None]
        if values or key != "fluency":
            out[key] = mean(values) if values else None
    for key in ("locality_by_category", "portability_by_category"):
        categories: dict[str, list[float]] = {}
        for r in per_request:
            for c, v in (r.get(key) or {}).items():
                categories.setdefault(c, []).append(v)
        out[key] = _means(categories)
    return out


def knowedit_summary(post: dict) -> dict:
    """KnowEdit's table (percent): Edit Succ., Portability (+ by category), Locality (+ by category), Fluency
    (n-gram entropy x 100, as KnowEdit reports it)."""
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "edit_succ": pct(post.get("reliability")),
        "portability": pct(post.get("portability")),
        "portability_by_category": {k: pct(v) for k, v in (post.get("portability_by_category") or {}).items()},
        "locality": pct(post.get("locality")),
        "locality_by_category": {k: pct(v) for k, v in (post.get("locality_by_category") or {}).items()},
        "fluency": pct(post.get("fluency")),
    }


def table(pre: dict, post: dict) -> str:
    """A fixed-width before/after table, with one row per locality/portability category."""
    fmt = lambda v: f"{v:8.3f}" if v is not None else f"{'-':>8}"  # noqa: E731
    lines = [f"{'metric':<34}{'before':>8}{'after':>8}"]
    for key in KEYS:
        lines.append(f"{key:<34}{fmt(pre.get(key))}{fmt(post.get(key))}")
        if key in ("locality", "portability"):
            cats = post.get(f"{key}_by_category") or {}
            if len(cats) > 1 or (cats and next(iter(cats)) != "default"):
                for cat, value in cats.items():
                    lines.append(f"{'  ' + key + '/' + cat:<34}{fmt((pre.get(f'{key}_by_category') or {}).get(cat))}{fmt(value)}")
    if post.get("fluency") is not None or pre.get("fluency") is not None:
        lines.append(f"{'fluency (n-gram entropy)':<34}{fmt(pre.get('fluency'))}{fmt(post.get('fluency'))}")
    return "\n".join(lines)


def knowedit_line(summary: dict) -> str:
    """KnowEdit's figures in one line: ``Edit Succ. 100.00, Portability 50.00 (Reasoning 50.00), ...``."""
    def part(label: str, key: str) -> str | None:
        value = summary.get(key)
        if value is None:
            return None
        cats = summary.get(f"{key}_by_category") or {}
        detail = ", ".join(f"{c} {v:.2f}" for c, v in cats.items() if v is not None)
        return f"{label} {value:.2f}" + (f" ({detail})" if detail and list(cats) != ["default"] else "")

    parts = [part("Edit Succ.", "edit_succ"), part("Portability", "portability"), part("Locality", "locality"),
             part("Fluency", "fluency")]
    return "KnowEdit: " + "; ".join(p for p in parts if p)
