"""The demo's extraction step: extract from held-out gold texts with a (tuned) model and score.

``knowlm demo`` calls :func:`extract_stage` before and after tuning so the two reports show what
tuning changed. Gold comes from an explicit file, else the bundled hand-annotated relation gold
set (``knowlm.resources.kg_gold_path()``), else the few records below.

It lives beside ``knowlm.demo`` rather than in ``knowlm.ie`` because it loads a model: ``ie`` stays
torch-free and only receives a :class:`knowlm.infer.TextGenerator`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from knowlm.utils.jsonl import read_jsonl, write_jsonl

# Fallback gold records (hand-written for this project) used when no bundled gold set exists.
FALLBACK_GOLD = [
    {"id": "ie-demo-0", "lang": "en", "text": "Marie Curie was born in Warsaw in 1867.",
     "relations": [{"head": "Marie Curie", "relation": "place of birth", "tail": "Warsaw"}]},
    {"id": "ie-demo-1", "lang": "en", "text": "Zhejiang University is a public university in Hangzhou, China.",
     "relations": [{"head": "Zhejiang University", "relation": "located in", "tail": "Hangzhou"}]},
    {"id": "ie-demo-2", "lang": "en", "text": "The Yangtze River flows through Shanghai.",
     "relations": [{"head": "Yangtze River", "relation": "flows through", "tail": "Shanghai"}]},
    {"id": "ie-demo-3", "lang": "zh", "text": "浙江大学位于杭州，创建于1897年。",
     "relations": [{"head": "浙江大学", "relation": "located in", "tail": "杭州"}]},
    {"id": "ie-demo-4", "lang": "zh", "text": "居里夫人出生于华沙。",
     "relations": [{"head": "居里夫人", "relation": "place of birth", "tail": "华沙"}]},
    {"id": "ie-demo-5", "lang": "zh", "text": "长江流经上海。",
     "relations": [{"head": "长江", "relation": "flows through", "tail": "上海"}]},
]


def _gold(gold: str | Path | list[dict] | None) -> tuple[list[dict], str]:
    if isinstance(gold, list):
        return gold, "given"
    if gold is not None:
        return read_jsonl(gold), str(gold)
    try:
        from knowlm.resources import kg_gold_path

        path = kg_gold_path()
        if path.is_file():
            records = [r for r in read_jsonl(path) if r.get("text")]
            if records:
                return records, str(path)
    except ImportError:  # pragma: no cover - resources always exist in the package
        pass
    return [json.loads(json.dumps(r)) for r in FALLBACK_GOLD], "fallback"


def extract_stage(
    workdir: str | Path,
    model_dir: str | Path,
    adapter: str | Path | None = None,
    gold: str | Path | list[dict] | None = None,
    task: str = "re",
    n_texts: int = 8,
    style: str = "json",
    constrained: bool = False,
    max_new_tokens: int = 96,
    tag: str = "ie",
    schema: Any = None,
) -> dict:
    """Extract from the last ``n_texts`` gold texts (sorted by id) and score them.

    Writes ``WORKDIR/TAG/pred.jsonl`` and ``WORKDIR/TAG/report.json``; returns a summary dict
    (``f1``, ``precision``, ``recall``, ``parse_failures``, paths, seconds).
    """
    from knowlm.decoding import DecodingParams
    from knowlm.ie.datasets import schema_from_records
    from knowlm.ie.extract import extract_texts
    from knowlm.ie.metrics import score
    from knowlm.infer import load_generator

    started = time.perf_counter()
    records, gold_source = _gold(gold)
    schema = schema or schema_from_records(records, task)
    held_out = sorted(records, key=lambda r: str(r.get("id", "")))[-n_texts:]
    generator = load_generator(str(model_dir), str(adapter) if adapter else None, device="cpu")
    stats: dict = {}
    preds = extract_texts(
        generator,
        [{"id": r.get("id"), "text": r["text"], "lang": r.get("lang")} for r in held_out],
        task,
        schema,
        style=style,
        constrained=constrained,
        params=DecodingParams(max_new_tokens=max_new_tokens),
        stats=stats,
    )
    report = score(held_out, preds)
    out = Path(workdir) / tag
    write_jsonl(out / "pred.jsonl", preds)
    write_jsonl(out / "gold.jsonl", held_out)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    measure = {"ner": "entity", "re": "relation", "ee": "event_trigger"}[task]
    return {
        "stage": tag,
        "task": task,
        "texts": len(held_out),
        "gold_source": gold_source,
        "precision": report[measure]["precision"],
        "recall": report[measure]["recall"],
        "f1": report[measure]["f1"],
        "parse_failures": report["parse_failures"]["total"],
        "generated_tokens": stats.get("generated_tokens", 0),
        "pred": str(out / "pred.jsonl"),
        "report": str(out / "report.json"),
        "seconds": round(time.perf_counter() - started, 2),
    }
