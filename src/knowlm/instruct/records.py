"""Reading instruction records, seed tasks and unlabelled texts, with every bad line counted."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterator

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import JsonlStats, iter_jsonl, open_text


def stable_id(*parts: str) -> str:
    """Short content hash: the same text gets the same id on every machine (resume keys)."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _merge(skipped: Counter, stats: JsonlStats) -> None:
    for reason, count in stats.skipped.items():
        skipped[reason] += count


def check_instruction(record: dict) -> str | None:
    """Why ``record`` is not a usable alpaca record, or None when it is."""
    if not isinstance(record.get("instruction"), str) or not record["instruction"].strip():
        return "no_instruction"
    if "output" in record and not isinstance(record["output"], str):
        return "output_not_a_string"
    if record.get("input") is not None and not isinstance(record["input"], str):
        return "input_not_a_string"
    return None


def read_instructions(path: str | Path, skipped: Counter | None = None) -> list[dict]:
    """Alpaca records ``{"instruction", "input", "output", ...}``; other fields are kept as they are."""
    skipped = skipped if skipped is not None else Counter()
    stats = JsonlStats()
    records = []
    for record in iter_jsonl(path, stats):
        reason = check_instruction(record)
        if reason:
            skipped[reason] += 1
            continue
        records.append(record)
    _merge(skipped, stats)
    return records


def read_seed_tasks(path: str | Path, skipped: Counter | None = None) -> list[dict]:
    """Seed tasks: alpaca records, or self-instruct's ``{"instruction", "instances": [{"input", "output"}]}``."""
    skipped = skipped if skipped is not None else Counter()
    stats = JsonlStats()
    seeds = []
    for index, row in enumerate(iter_jsonl(path, stats)):
        instances = row.get("instances")
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            row = {**{k: v for k, v in row.items() if k != "instances"}, "input": instances[0].get("input") or "", "output": instances[0].get("output") or ""}
        reason = check_instruction(row)
        if reason:
            skipped[reason] += 1
            continue
        seeds.append({"id": str(row.get("id", f"seed-{index}")), "instruction": row["instruction"].strip(),
                      "input": row.get("input") or "", "output": row.get("output") or ""})
    _merge(skipped, stats)
    if not seeds:
        raise KnowlmError(f"{path}: no usable seed tasks (need JSONL lines with an 'instruction')")
    return seeds


def iter_texts(path: str | Path, key: str = "text", skipped: Counter | None = None) -> Iterator[dict]:
    """Unlabelled texts ``{"id", "text"}`` from JSONL (field ``key``, optional ``id``) or .txt (a text per line)."""
    skipped = skipped if skipped is not None else Counter()
    path = Path(path)
    if path.name.endswith((".txt", ".txt.gz")):
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    text = line.strip()
                    yield {"id": stable_id(text), "text": text}
        return
    stats = JsonlStats()
    for row in iter_jsonl(path, stats):
        text = row.get(key)
        if not isinstance(text, str) or not text.strip():
            skipped["no_text"] += 1
            continue
        yield {"id": str(row["id"]) if row.get("id") is not None else stable_id(text), "text": text.strip()}
    _merge(skipped, stats)
