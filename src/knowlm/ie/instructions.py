"""Gold IE records -> instruction records (alpaca JSONL) for supervised fine-tuning.

Each record asks about the schema items it contains plus a sample of items it does not
contain (negatives, answered with ``[]``) so the tuned model learns to say "nothing" as well as
to extract. Sampling uses a random generator seeded by ``(seed, record id)``: the same input
gives the same file on every machine and Python hash seed.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Iterator, Sequence

from knowlm.ie.prompts import build_prompt, check_style, gold_output
from knowlm.ie.records import detect_lang, is_na
from knowlm.ie.schema import DEFAULT_SPLIT_NUM, EventType, batch_schema, item_name, make_schema, sample_negatives


def present_items(record: dict, task: str) -> list[str]:
    """Schema item names that occur in a gold record, in order of first appearance."""
    if task == "ner":
        names = [e.get("type") for e in record.get("entities") or []]
    elif task in ("re", "spo"):
        names = [r.get("relation") for r in record.get("relations") or [] if not is_na(r.get("relation"))]
    else:
        names = [e.get("type") for e in record.get("events") or []]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def _with_triggers(batch: list, record: dict) -> list:
    """EEA prompts name the events' triggers (IEPile's EEA schema items carry ``trigger``)."""
    out = []
    for item in batch:
        triggers = [e["trigger"] for e in record.get("events") or [] if e.get("type") == item.name and e.get("trigger")]
        out.append(EventType(item.name, item.roles, tuple(dict.fromkeys(triggers))))
    return out


def records_to_instructions(
    records: Iterable[dict],
    task: str,
    schema_items: Any,
    style: str = "json",
    lang: str | None = "auto",
    split_num: int | None = None,
    neg_ratio: float | None = 1.0,
    seed: int = 0,
    hard_groups: Sequence[Sequence[str]] = (),
    variants: bool = True,
    keep_empty: bool = True,
    wording: str = "full",
) -> Iterator[dict]:
    """Alpaca records ``{"instruction", "input", "output", "id", "task", "style", "lang", "schema"}``.

    ``neg_ratio``: negative schema items per positive one (``None``: ask about the whole
    schema, as at test time). ``variants``: rotate through the instruction wordings.
    ``keep_empty``: records with no positive item still yield prompts made of negatives.
    ``wording``: ``full`` or ``compact`` instructions (see :func:`knowlm.ie.prompts.build_prompt`).
    EEA asks only about the events a text has, naming their triggers (IEPile's EEA recipe).
    """
    schema = make_schema(task, schema_items)
    style = check_style(style)
    split = DEFAULT_SPLIT_NUM[schema.task] if split_num is None else split_num
    known = set(schema.names())
    for index, record in enumerate(records):
        text = record.get("text") or ""
        if not text:
            continue
        rid = str(record.get("id") if record.get("id") is not None else index)
        rng = random.Random(f"{seed}:{rid}")
        record_lang = lang if lang in ("zh", "en") else record.get("lang") if record.get("lang") in ("zh", "en") else detect_lang(text)
        positives = [n for n in present_items(record, schema.task) if n in known]
        if not positives and (not keep_empty or schema.task == "eea"):
            continue
        if schema.task == "eea":
            chosen_names = set(positives)
        elif neg_ratio is None:
            chosen_names = set(known)
        else:
            negatives = sample_negatives(positives, schema.items, neg_ratio, rng, hard_groups)
            chosen_names = set(positives) | {item_name(n) for n in negatives}
        chosen = [item for item in schema.items if item_name(item) in chosen_names]  # schema order
        for k, batch in enumerate(batch_schema(chosen, split)):
            sub = schema.subset(_with_triggers(batch, record) if schema.task == "eea" else batch)
            variant = rng.randrange(3) if variants else 0
            instruction, input_text = build_prompt(schema.task, text, sub, style=style, lang=record_lang, variant=variant, wording=wording)
            out = {
                "instruction": instruction,
                "input": input_text,
                "output": gold_output(schema.task, record, sub, style=style, lang=record_lang),
                "id": f"{rid}-{k}",
                "task": schema.task,
                "style": style,
                "lang": record_lang,
                "schema": sub.to_json(),
            }
            if wording != "full":
                out["wording"] = wording
            if record.get("source"):
                out["source"] = record["source"]
            yield out
