"""IEPile's files and scorer (zjunlp/IEPile ``ie2instruction``).

Layouts, one JSON object per line, ``instruction`` a JSON string ``{"instruction", "schema", "input"}``:

* train: ``{"task", "source", "instruction", "output"}`` (one line per schema batch);
* test: ``{"id", "instruction", "label"}`` (+ ``task``, ``source`` in newer files); ``label`` is a
  JSON string of the text's whole gold in the ``sample.json`` form (NER ``[{"entity",
  "entity_type"}]``, RE/KG ``[{"head", "relation", "tail"}]``, SPO adds ``head_type``/``tail_type``,
  EE/EET/EEA ``[{"event_trigger", "event_type", "arguments": [{"argument", "role"}]}]``);
* results: the test layout plus the model's ``output``.

Lines about one text share its ``id``; ``eval_func.py`` groups them by ``source + id``, takes the
label of the first line and the outputs of all lines. :mod:`knowlm.ie.iepile_scorer` reproduces its
numbers (default ``match_mode="normal"``: duplicates counted; P and R in percent rounded to 2
places, F1 from the rounded P and R, rounded), with two differences: EET uses the extractor
IEPile wrote (``post_process4``; the shipped script calls a missing ``post_process`` and stops),
and an EE answer whose ``arguments`` is not an object counts as an error where the script would
stop. IEPile has no scorer for SPO and KG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from knowlm.ie.iepile_scorer import SCORED, eval_func_scores, extract
from knowlm.ie.records import new_record

TASKS = ("NER", "RE", "EE", "EET", "EEA", "SPO", "KG")


class BadLine(ValueError):
    """A line that is not in an IEPile layout; the message is the reason."""


def prompt_of(item: dict) -> dict:
    """The decoded ``instruction`` object of a line (it must hold ``input``); a ``task`` field
    naming no IEPile task makes the line ``unknown_task``."""
    task = item.get("task")
    if task is not None and (not isinstance(task, str) or task.upper() not in TASKS):
        raise BadLine("unknown_task")
    raw = item.get("instruction")
    try:
        prompt = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise BadLine("bad_instruction_json") from None
    if not isinstance(prompt, dict) or not isinstance(prompt.get("input"), str):
        raise BadLine("bad_instruction_json")
    return prompt


def label_of(item: dict) -> list | None:
    """The decoded ``label`` of a test/results line (None when the line has none)."""
    raw = item.get("label")
    if raw is None:
        return None
    try:
        label = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise BadLine("bad_label_json") from None
    if not isinstance(label, list):
        raise BadLine("bad_label_json")
    return label


_WORDING = (  # words of IEPile's instruction_mapper, for lines that do not say their task
    ("EEA", ("事件论元提取", "event argument extraction")),
    ("EET", ("事件类型及事件触发词", "event types and event trigger words")),
    ("SPO", ("SPO三元组", "spo关系三元组")),
    ("NER", ("实体抽取", "named entity recognition")),
    ("RE", ("关系抽取", "relationship extraction")),
    ("EE", ("事件提取", "event extraction")),
)


def infer_task(item: dict, prompt: dict, label: list | None) -> str:
    """The line's IEPile task: its ``task`` field, else the schema's shape, the label's fields
    and the instruction's wording."""
    task = item.get("task")
    if isinstance(task, str) and task.upper() in TASKS:
        return task.upper()
    schema = prompt.get("schema")
    first = schema[0] if isinstance(schema, list) and schema else None
    if isinstance(first, dict):
        if "predicate" in first or "subject_type" in first:
            return "SPO"
        if "entity_type" in first:
            return "KG"
        if "event_type" in first:
            return "EE" if first.get("trigger") is True else "EEA"
    gold = next((x for x in label or [] if isinstance(x, dict)), None)
    if gold is not None:
        if "entity" in gold:
            return "NER"
        if "event_type" in gold:
            return "EET"
        if "head_type" in gold:
            return "SPO"
        if "head" in gold:
            return "RE"
    wording = str(prompt.get("instruction", "")).lower()
    for name, words in _WORDING:
        if any(w.lower() in wording for w in words):
            return name
    raise BadLine("unknown_task")


def label_fragment(task: str, label: list) -> dict:
    """IEPile gold (the ``sample.json`` form) -> IE record lists, duplicates kept as written."""
    out: dict[str, list] = {"entities": [], "relations": [], "events": []}
    for x in label:
        if not isinstance(x, dict):
            raise BadLine("bad_label")
        if task == "NER":
            if not isinstance(x.get("entity"), str) or not isinstance(x.get("entity_type"), str):
                raise BadLine("bad_label")
            out["entities"].append({"text": x["entity"], "type": x["entity_type"]})
        elif task in ("RE", "KG", "SPO"):
            rel = {k: x.get(k, "") for k in ("head", "relation", "tail")}
            if not all(isinstance(v, str) for v in rel.values()):
                raise BadLine("bad_label")
            for k in ("head_type", "tail_type"):
                if isinstance(x.get(k), str) and x[k]:
                    rel[k] = x[k]
            out["relations"].append(rel)
        else:
            args = x.get("arguments") or []
            if not isinstance(x.get("event_type"), str) or not isinstance(args, list):
                raise BadLine("bad_label")
            arguments = []
            for a in args:
                if not isinstance(a, dict) or not isinstance(a.get("argument"), str) or not isinstance(a.get("role"), str):
                    raise BadLine("bad_label")
                arguments.append({"text": a["argument"], "role": a["role"]})
            trigger = x.get("event_trigger", "")
            out["events"].append({"trigger": trigger if isinstance(trigger, str) else "", "type": x["event_type"], "arguments": arguments})
    return out


@dataclass
class Group:
    """The lines about one text of one task (eval_func.py's ``source + id`` key)."""

    task: str
    source: str
    id: str
    text: str
    label: list | None
    where: str
    lines: list[tuple[Any, Any, str]] = field(default_factory=list)  # (output, schema, where)

    @property
    def key(self) -> str:
        return f"{self.task}:{self.source}:{self.id}"


def group_lines(items: Iterable[tuple[str, dict]], task: str | None = None) -> Iterator[Group | tuple[str, str]]:
    """Groups in first-appearance order; a bad line yields ``(reason, where)`` instead."""
    groups: dict[str, Group] = {}
    for where, item in items:
        try:
            prompt = prompt_of(item)
            label = label_of(item)
            name = task.upper() if task else infer_task(item, prompt, label)
        except BadLine as exc:
            yield str(exc), where
            continue
        source = item.get("source")
        source = source if isinstance(source, str) else "None"
        iid = item.get("id")
        iid = str(iid) if iid is not None else prompt["input"]
        group = Group(name, source, iid, prompt["input"], label, where)
        if group.key not in groups:
            groups[group.key] = group
        groups[group.key].lines.append((item.get("output"), prompt.get("schema"), where))
    yield from groups.values()


# ---------------------------------------------------------------- knowlm records from a group


def gold_record(group: Group) -> dict:
    """The group's gold as an IE record (``task`` = knowlm's name, e.g. ``eet``)."""
    record = new_record(group.text, id=group.key, source=group.source)
    record["task"] = group.task.lower()
    record.update(label_fragment(group.task, group.label or []))
    return record


def lenient_prediction(group: Group) -> dict:
    """knowlm's reading of the group's outputs: :func:`knowlm.ie.parsing.parse_output` on each line
    with that line's schema (spans kept as written), merged."""
    from knowlm.errors import KnowlmError
    from knowlm.ie.parsing import TASK_FIELD, parse_output

    task = group.task.lower()
    field_name = TASK_FIELD[task]
    record: dict = {"id": group.key, "task": task, field_name: []}
    errors: list[str] = []
    for output, schema, _ in group.lines:
        try:
            parsed = parse_output(output, task, schema, style="json", text=None, drop_hallucinated=False)
        except KnowlmError:
            errors.append("bad_schema")
            continue
        if parsed.get("parse_error"):
            errors.append(parsed["parse_error"])
        record[field_name].extend(parsed[field_name])
    return _with_errors(record, errors, group)


def faithful_prediction(group: Group) -> dict:
    """eval_func.py's reading of the group's outputs (strict JSON, values as written), as an IE record."""
    task = group.task
    record: dict = {"id": group.key, "task": task.lower(), "entities": [], "relations": [], "events": []}
    errors = []
    for output, _, _ in group.lines:
        ok, found = extract(task, output)
        if not ok:
            errors.append("iepile_json_error")
        for t in found:
            if task == "NER":
                record["entities"].append({"text": t[0], "type": t[1]})
            elif task == "RE":
                record["relations"].append({"head": t[0], "relation": t[1], "tail": t[2]})
            elif task == "EET":
                record["events"].append({"trigger": t[0], "type": t[1], "arguments": []})
            else:
                record["events"].append({"trigger": t[1], "type": t[0], "arguments": [{"text": a, "role": r} for a, r in t[2]]})
    return _with_errors(record, errors, group)


def _with_errors(record: dict, errors: list[str], group: Group) -> dict:
    """A merged prediction records each line's parse error; it failed as a whole only when every line did."""
    if errors:
        record["parse_errors"] = errors
        if len(errors) == len(group.lines):
            record["parse_error"] = errors[0]
    return record


# ---------------------------------------------------------------- one command: score a results file


def score_results(path, task: str | None = None, match: str | None = None, count: str = "set") -> dict:
    """``knowlm eval --iepile RESULTS``: gold from ``label``, predictions from ``output``.

    ``count="set"`` scores knowlm's reading of the outputs (lenient parse, distinct tuples,
    ``match`` default ``strict``); ``count="duplicates"`` scores eval_func.py's reading (strict
    JSON, every tuple as often as written, ``match`` default ``exact``). Both are in
    ``by_count``; ``iepile`` holds eval_func.py's own numbers per task; ``skipped`` counts
    lines and texts left out, by reason, with the first ``file:line`` of each."""
    from knowlm.errors import KnowlmError
    from knowlm.ie.metrics import check_count, score
    from knowlm.utils.jsonl import JsonlStats, iter_jsonl_numbered

    check_count(count)
    if task is not None and task.upper() not in TASKS:
        raise KnowlmError(f"unknown IEPile task {task!r}; choose one of: {', '.join(TASKS)}")
    stats = JsonlStats()
    skipped: dict[str, dict] = {}

    def skip(reason: str, where: str) -> None:
        entry = skipped.setdefault(reason, {"count": 0, "first": where})
        entry["count"] += 1

    groups: list[Group] = []
    lines = ((f"{path}:{n}", item) for n, item in iter_jsonl_numbered(path, stats))
    for found in group_lines(lines, task):
        if isinstance(found, tuple):
            skip(*found)
        elif found.label is None:
            skip("no_label", found.where)
        elif found.task == "KG":
            skip("unsupported_task", found.where)
        else:
            try:
                label_fragment(found.task, found.label)
            except BadLine as exc:
                skip(str(exc), found.where)
                continue
            groups.append(found)
    for reason, n in stats.skipped.items():
        skipped[reason] = {"count": n, "first": f"{path}:{stats.first_bad_lines[0]}" if stats.first_bad_lines else str(path)}
    if not groups:
        raise KnowlmError(f"{path}: no IEPile results lines with an instruction and a label")
    gold = [gold_record(g) for g in groups]
    by_mode = {
        "set": score(gold, [lenient_prediction(g) for g in groups], match=match or "strict", count="set"),
        "duplicates": score(
            gold, [faithful_prediction(g) if g.task in SCORED else lenient_prediction(g) for g in groups],
            match=match or "exact", count="duplicates",
        ),
    }
    report = by_mode[count]
    report["by_count"] = {mode: by_mode[mode]["by_count"][mode] for mode in by_mode}
    report["iepile"] = eval_func_scores(groups)
    report["skipped"] = skipped
    report["lines"] = sum(len(g.lines) for g in groups)
    return report
