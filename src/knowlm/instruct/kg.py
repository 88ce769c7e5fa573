"""KG2Instruction as an instruction generator: texts + a knowledge graph -> relation-extraction
instructions by distant supervision (``knowlm.ie.kg2instruct``), written as alpaca JSONL with
provenance so they can go through the same selectors as generated data. No model is needed."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import iter_jsonl, write_jsonl

SPLITS = ("train", "dev", "test")


def kg_instructions(corpus: Sequence[str | Path], kg: Sequence[str | Path], output: str | Path,
                    schema_path: str | Path | None = None, splits: Sequence[str] = ("train",), config=None) -> dict:
    """Run KG2Instruction and write the chosen splits' instructions to ``output`` (atomically)."""
    from knowlm.ie.kg2instruct import KG2InstructConfig, kg2instruct

    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise KnowlmError(f"unknown split(s) {', '.join(bad) or '(none)'}; choose from train, dev, test")
    started = time.perf_counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kg2instruct-", dir=output.parent) as tmp:
        stats = kg2instruct(corpus, kg, Path(tmp) / "out", config or KG2InstructConfig(), schema_path=schema_path)
        records = []
        for split in splits:
            for row in iter_jsonl(Path(tmp) / "out" / f"{split}.jsonl"):
                provenance = {"method": "kg2instruct", "split": split, "record_id": row.get("id"),
                              "task": row.get("task"), "style": row.get("style"), "schema": row.get("schema")}
                records.append({"id": f"kg-{row.get('style')}-{row.get('id')}", "instruction": row["instruction"], "input": row.get("input") or "",
                                "output": row["output"], "lang": row.get("lang"), "source": "kg2instruct", "provenance": provenance})
    count = write_jsonl(output, records)
    return {"method": "kg2instruct", "output": str(output), "records": count, "splits": list(splits),
            "triples": stats.get("triples"), "documents": stats.get("documents"),
            "skipped_input": stats.get("skipped_input", {}), "seconds": round(time.perf_counter() - started, 2)}
