"""Selection pipelines: YAML lists of selector steps applied in order.

```yaml
- selector: length
  min_output: 2
- selector: dedup
- selector: rouge
  threshold: 0.7
- selector: mtld
- selector: language
  langs: [zh, en]
```
Every step reports how many records it saw, dropped and why. A dry run applies every step to
every record and drops nothing: each record gets its scores and the first step that would have
dropped it, so thresholds can be tuned before throwing data away.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowlm.errors import KnowlmError
from knowlm.instruct.records import read_instructions
from knowlm.instruct.selectors import SELECTORS, SelectContext, Selector
from knowlm.utils.jsonl import read_text, write_jsonl

DEFAULT_PIPELINE = [{"selector": name} for name in ("length", "dedup", "rouge", "mtld", "language")]
_POINTERS = ("duplicate_of", "similar_to")  # score fields that point at another record (by position)


@dataclass
class Step:
    label: str  # key of its scores in a record: the selector name, "name#2" when repeated
    selector: Selector


def build_steps(spec: Any) -> list[Step]:
    """A list of ``{selector: name, ...params}`` (or bare names) -> steps, checked up front."""
    if isinstance(spec, dict) and "steps" in spec:
        spec = spec["steps"]
    if not isinstance(spec, list) or not spec:
        raise KnowlmError("a pipeline is a non-empty list of steps like {selector: dedup, threshold: 0.8}")
    steps, seen = [], Counter()
    for number, raw in enumerate(spec, 1):
        if isinstance(raw, str):
            raw = {"selector": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("selector"), str):
            raise KnowlmError(f"pipeline step {number}: expected a mapping with a 'selector' name, got {raw!r}")
        params = {k: v for k, v in raw.items() if k != "selector"}
        name = raw["selector"]
        if name not in SELECTORS:
            raise KnowlmError(f"pipeline step {number}: unknown selector {name!r}; choose from {', '.join(SELECTORS)}")
        seen[name] += 1
        steps.append(Step(name if seen[name] == 1 else f"{name}#{seen[name]}", SELECTORS[name].from_params(params)))
    return steps


def load_pipeline(path: str | Path | None) -> list[Step]:
    """Steps from a YAML file; the default pipeline (length, dedup, rouge, mtld, language) without one."""
    if path is None:
        return build_steps(DEFAULT_PIPELINE)
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"pipeline file not found: {path}")
    try:
        spec = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise KnowlmError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    return build_steps(spec)


def _where(score: Any, positions: list[int]) -> Any:
    """Turn a selector's local index (position among this step's inputs) into the input-file position."""
    if isinstance(score, dict):
        return {k: positions[v] if k in _POINTERS and isinstance(v, int) else v for k, v in score.items()}
    return score


def run_steps(records: list[dict], steps: list[Step], context: SelectContext | None = None, dry_run: bool = False,
              scores: bool = False, echo=None) -> tuple[list[dict], list[dict], list[dict]]:
    """Apply ``steps`` in order -> (kept records, dropped records, per-step report).

    ``scores`` (always on in a dry run) writes ``record["scores"][step]``; dropped records get
    ``record["dropped"] = {"step", "reason"}``. Positions in scores refer to the input order."""
    context = context or SelectContext()
    scores = scores or dry_run
    items = [dict(r) for r in records]
    if scores:
        for item in items:
            item["scores"] = dict(item.get("scores") or {})
    alive = list(range(len(items)))  # positions of the records this step sees
    dropped_at: dict[int, dict] = {}
    report = []
    for step in steps:
        started = time.perf_counter()
        decisions = step.selector.decide([items[i] for i in alive], context)
        if len(decisions) != len(alive):
            raise RuntimeError(f"selector {step.label} returned {len(decisions)} decisions for {len(alive)} records")
        reasons, notes, survivors = Counter(), Counter(), []
        for position, decision in zip(alive, decisions):
            if scores:
                items[position]["scores"][step.label] = _where(decision.score, alive)
            if decision.note:
                notes[decision.note] += 1
            if decision.keep:
                survivors.append(position)
                continue
            reasons[decision.reason or "dropped"] += 1
            if position not in dropped_at:
                dropped_at[position] = {"step": step.label, "reason": decision.reason or "dropped"}
            if dry_run:
                survivors.append(position)
        entry = {"step": step.label, "params": step.selector.params(), "input": len(alive),
                 "dropped": sum(reasons.values()), "kept": len(alive) - sum(reasons.values()),
                 "reasons": dict(reasons.most_common()), "seconds": round(time.perf_counter() - started, 3)}
        if notes:
            entry["notes"] = dict(notes)
        report.append(entry)
        if echo:
            echo(entry)
        alive = survivors
    for position, where in dropped_at.items():
        items[position]["dropped"] = where
    if dry_run:
        return items, [], report
    return [items[i] for i in alive], [items[i] for i in sorted(dropped_at)], report


def select(input: str | Path, output: str | Path, pipeline: str | Path | list | None = None, dry_run: bool = False,
           scores: bool = False, rejected: str | Path | None = None, context: SelectContext | None = None, echo=None,
           allow_empty: bool = False) -> dict:
    """Read ``input``, run the pipeline, write kept records (all, scored, in a dry run) to ``output``.
    An input without records is a KnowlmError unless ``allow_empty``."""
    started = time.perf_counter()
    steps = build_steps(pipeline) if isinstance(pipeline, list) else load_pipeline(pipeline)
    skipped: Counter = Counter()
    records = read_instructions(input, skipped)
    if not records and not allow_empty:
        bad = f" ({sum(skipped.values())} bad lines skipped: {dict(skipped)})" if skipped else ""
        raise KnowlmError(f"{input}: no instruction records to select from{bad}; --allow-empty writes an empty file")
    kept, dropped, report = run_steps(records, steps, context, dry_run=dry_run, scores=scores, echo=echo)
    if not dry_run and not scores:
        kept = [{k: v for k, v in r.items() if k != "dropped"} for r in kept]
    write_jsonl(output, kept)
    if rejected is not None and not dry_run:
        write_jsonl(rejected, dropped)
    would_drop = sum(1 for r in kept if "dropped" in r) if dry_run else len(dropped)
    return {
        "input": str(input), "output": str(output), "read": len(records), "skipped_lines": dict(skipped),
        "written": len(kept), ("would_drop" if dry_run else "dropped"): would_drop, "dry_run": dry_run,
        "steps": report, "seconds": round(time.perf_counter() - started, 2),
    }
