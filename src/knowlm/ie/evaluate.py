"""Extract every task of a per-language schema from gold IE records and score the result.

What ``knowlm demo`` (before and after tuning, free and constrained), the learning test and
``bench/bench_demo_ie.py`` run on held-out documents: one call per (task, language) through the
shared extraction pipeline, predictions merged per document, then micro P/R/F1 per measure,
overall and per language. Torch-free: the generator does the model work.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from knowlm.ie.extract import extract_texts
from knowlm.ie.metrics import score
from knowlm.ie.parsing import TASK_FIELD

MEASURE = {"ner": "entity", "re": "relation", "ee": "event_trigger"}


def schema_tasks(schema: dict[str, dict[str, Any]]) -> list[str]:
    """Tasks of a ``{task: {lang: items}}`` schema in a fixed order (NER, RE, EE)."""
    return [t for t in ("ner", "re", "ee") if t in schema]


def extract_and_score(
    generator,
    gold: Sequence[dict],
    schema: dict[str, dict[str, Any]],
    *,
    style: str = "json",
    wording: str | None = None,
    constrained: bool = False,
    params=None,
    batch_size: int = 16,
    progress: bool = False,
    max_input_tokens: int | None = None,
) -> dict:
    """``{"predictions", "scores": {"all"|lang: score report}, "summary", "stats", "seconds"}``.

    ``schema``: ``{"ner": {"en": [...], "zh": [...]}, "re": {...}}`` (a task or language missing
    from it is not asked). ``summary`` holds P/R/F1 per measure for ``all`` and each language.
    ``wording``: the prompt wording (default: the one the generator's model was tuned on).
    ``max_input_tokens``: texts longer than this are asked chunk by chunk (cut at sentences).
    """
    started = time.perf_counter()
    tasks = schema_tasks(schema)
    preds = {str(g["id"]): {"id": str(g["id"]), "lang": g.get("lang"), **{TASK_FIELD[t]: [] for t in tasks}} for g in gold}
    stats: dict[str, dict] = {}
    for task in tasks:
        for lang, items in sorted(schema[task].items()):
            docs = [{"id": str(g["id"]), "text": g["text"], "lang": lang} for g in gold if g.get("lang") == lang]
            if not docs or not items:
                continue
            run: dict = {}
            records = extract_texts(generator, docs, task, items, lang=lang, style=style, wording=wording, constrained=constrained,
                                    params=params, batch_size=batch_size, progress=progress, stats=run, max_input_tokens=max_input_tokens)
            stats[f"{task}/{lang}"] = run
            field = TASK_FIELD[task]
            for record in records:
                pred = preds[record["id"]]
                pred[field] = record.get(field, [])
                for key in ("parse_errors", "parse_notes"):
                    if record.get(key):
                        pred.setdefault(key, []).extend(record[key])
                if record.get("parse_error"):
                    pred.setdefault("failed_tasks", []).append(task)
    predictions = [preds[str(g["id"])] for g in gold]
    scores = {"all": score(gold, predictions)}
    for lang in sorted({g.get("lang") for g in gold if g.get("lang")}):
        pairs = [(g, p) for g, p in zip(gold, predictions) if g.get("lang") == lang]
        scores[lang] = score([g for g, _ in pairs], [p for _, p in pairs])
    measures = [MEASURE[t] for t in tasks]
    summary = {
        part: {m: {k: report[m][k] for k in ("precision", "recall", "f1", "tp", "n_pred", "n_gold")} for m in measures}
        for part, report in scores.items()
    }
    return {
        "predictions": predictions,
        "scores": scores,
        "summary": summary,
        "parse_failures": sum(s.get("parse_failures", 0) for s in stats.values()),
        "prompts": sum(s.get("prompts", 0) for s in stats.values()),
        "stats": stats,
        "seconds": time.perf_counter() - started,
    }
