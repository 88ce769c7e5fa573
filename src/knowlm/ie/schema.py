"""Extraction schemas and schema batching.

A schema says what to extract: entity types (NER), relation names (RE), event types with
their roles (EE), and the task shapes OneKE-style models are tuned for besides: event types
only (EET, detect triggers), arguments given the event type (EEA) and relations whose subject
and object types are part of the schema item (SPO, IEPile's ``{subject_type, predicate,
object_type}``). Large schemas are split into batches of ``split_num`` items so one prompt
never lists hundreds of types (IEPile's recipe); order is always the caller's order, never a
set's or a hash's, so the same input gives the same prompts on every run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import read_text

TASKS = ("ner", "re", "ee", "eet", "eea", "spo")
DEFAULT_SPLIT_NUM = {"ner": 6, "re": 4, "ee": 4, "eet": 4, "eea": 4, "spo": 4}  # IEPile's recommended split_num
EVENT_TASKS = ("ee", "eet", "eea")
ROLE_TASKS = ("ee", "eea")  # schema items are EventType with roles


@dataclass(frozen=True)
class EventType:
    """One EE schema item: an event type and its argument roles."""

    name: str
    roles: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()  # EEA: the triggers the prompt gives (IEPile train files list them)

    def to_json(self, task: str = "ee") -> dict:
        if task == "eea":  # IEPile's EEA schema item: no trigger flag, the given triggers when known
            out: dict = {"event_type": self.name}
            if self.triggers:
                out["trigger"] = list(self.triggers)
            out["arguments"] = list(self.roles)
            return out
        return {"event_type": self.name, "trigger": True, "arguments": list(self.roles)}


@dataclass(frozen=True)
class SpoType:
    """One SPO schema item: a predicate with the types of its subject and object."""

    subject_type: str
    predicate: str
    object_type: str

    @property
    def name(self) -> str:
        return self.predicate

    def to_json(self) -> dict:
        return {"subject_type": self.subject_type, "predicate": self.predicate, "object_type": self.object_type}


@dataclass
class Schema:
    """What to extract for one task. ``items`` are names (NER/RE) or :class:`EventType` (EE)."""

    task: str
    items: list = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)  # few-shot: {"input": ..., "output": ...}
    head_tail_types: dict[str, tuple[str, str]] = field(default_factory=dict)  # RE: relation -> (head type, tail type)

    def names(self) -> list[str]:
        return [item_name(i) for i in self.items]

    def subset(self, items: Sequence) -> "Schema":
        names = {item_name(i) for i in items}
        return Schema(
            self.task,
            list(items),
            {k: v for k, v in self.descriptions.items() if k in names},
            self.examples,
            {k: v for k, v in self.head_tail_types.items() if k in names},
        )

    def roles(self, event_type: str) -> tuple[str, ...]:
        for item in self.items:
            if isinstance(item, EventType) and item.name == event_type:
                return item.roles
        return ()

    def item(self, name: str):
        """The first schema item called ``name`` (None when there is none)."""
        for item in self.items:
            if item_name(item) == name:
                return item
        return None

    def to_json(self) -> list:
        """The IEPile form used in prompts: names for NER/RE/EET, event dicts for EE/EEA, SPO dicts."""
        out: list = []
        for i in self.items:
            if isinstance(i, EventType):
                out.append(i.to_json(self.task))
            elif isinstance(i, SpoType):
                out.append(i.to_json())
            else:
                out.append(i)
        return out


def item_name(item: Any) -> str:
    if isinstance(item, (EventType, SpoType)):
        return item.name
    if isinstance(item, dict):
        return str(item.get("event_type") or item.get("predicate") or item.get("name") or "")
    return str(item)


def _item_key(item: Any) -> Any:
    """What makes two schema items the same (an SPO item is its whole signature)."""
    return item if isinstance(item, SpoType) else item_name(item)


def check_task(task: str) -> str:
    """A knowlm task name; IEPile's upper-case names (``NER``, ``EET``...) are accepted."""
    task = (task or "").lower()
    if task not in TASKS:
        raise KnowlmError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def _event_type(raw: Any, where: str) -> EventType:
    if isinstance(raw, EventType):
        return raw
    if isinstance(raw, str):
        return EventType(raw, ())
    if isinstance(raw, dict):
        name = raw.get("event_type") or raw.get("name") or raw.get("type")
        roles = raw.get("arguments", raw.get("roles", []))
        if isinstance(roles, dict):  # {role: description}
            roles = list(roles)
        if not name or not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise KnowlmError(f"{where}: an EE schema item needs 'event_type' and a list of 'arguments' (roles)")
        triggers = raw.get("trigger")
        triggers = [triggers] if isinstance(triggers, str) else triggers if isinstance(triggers, list) else []
        return EventType(str(name), tuple(dict.fromkeys(roles)), tuple(t for t in triggers if isinstance(t, str) and t))
    raise KnowlmError(f"{where}: bad EE schema item {raw!r}")


def _spo_type(raw: Any, where: str) -> SpoType:
    if isinstance(raw, SpoType):
        return raw
    if isinstance(raw, dict):
        predicate = raw.get("predicate") or raw.get("relation")
        subject_type = raw.get("subject_type", raw.get("head_type", ""))
        object_type = raw.get("object_type", raw.get("tail_type", ""))
        if isinstance(predicate, str) and predicate and isinstance(subject_type, str) and isinstance(object_type, str):
            return SpoType(subject_type, predicate, object_type)
    if isinstance(raw, str) and raw.count("_") >= 2:  # IEPile's schema.json form "人物_国籍_国家"
        head, *middle, tail = raw.split("_")
        return SpoType(head, "_".join(middle), tail)
    raise KnowlmError(f"{where}: an SPO schema item needs 'subject_type', 'predicate' and 'object_type', got {raw!r}")


def make_schema(task: str, raw: Any, where: str = "schema") -> Schema:
    """Accept a list of names, ``{name: description}``, IEPile EE dicts, a JSON string, a
    :class:`Schema`, or ``{"items"/"schema": ..., "descriptions": ..., "examples": ...}``."""
    task = check_task(task)
    if isinstance(raw, Schema):
        if raw.task != task:
            raise KnowlmError(f"{where}: schema is for task {raw.task!r}, not {task!r}")
        return raw
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            if raw.lstrip().startswith(("[", "{")):  # meant as JSON: never split a broken list into odd items
                raise KnowlmError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}): {raw.strip()[:80]}") from None
            raw = [part.strip() for part in raw.split(",") if part.strip()]
    schema = Schema(task)
    if isinstance(raw, dict) and any(k in raw for k in ("items", "schema", "types", "relations", "events")):
        schema.examples = list(raw.get("examples") or [])
        schema.descriptions = dict(raw.get("descriptions") or {})
        raw = raw.get("items") or raw.get("schema") or raw.get("types") or raw.get("relations") or raw.get("events")
    if isinstance(raw, dict):  # {name: description} or EE {event_type: [roles]}
        if task in ROLE_TASKS:
            items = [{"event_type": k, "arguments": v if isinstance(v, list) else []} for k, v in raw.items()]
        else:
            items = list(raw)
            schema.descriptions.update({k: str(v) for k, v in raw.items() if isinstance(v, str) and v})
        raw = items
    if not isinstance(raw, list) or not raw:
        raise KnowlmError(f"{where}: expected a non-empty list of {'event types' if task in EVENT_TASKS else 'type names'}")
    seen: set = set()
    for entry in raw:
        if task in ROLE_TASKS:
            item: Any = _event_type(entry, where)
        elif task == "spo":
            item = _spo_type(entry, where)
        elif task == "eet" and isinstance(entry, (dict, EventType)):  # an EE schema reused for EET: the type names
            item = _event_type(entry, where).name
        elif isinstance(entry, dict):  # RE with types: {"relation": ..., "head_type": ..., "tail_type": ...}
            item = entry.get("relation") or entry.get("name") or entry.get("type")
            if not item:
                raise KnowlmError(f"{where}: bad schema item {entry!r}")
            if entry.get("description"):
                schema.descriptions[item] = str(entry["description"])
            if entry.get("head_type") or entry.get("tail_type"):
                schema.head_tail_types[item] = (str(entry.get("head_type", "")), str(entry.get("tail_type", "")))
        elif isinstance(entry, str) and entry.strip():
            item = entry.strip()
        else:
            raise KnowlmError(f"{where}: schema items must be non-empty strings, got {entry!r}")
        key = _item_key(item)
        if key in seen:
            continue
        seen.add(key)
        schema.items.append(item)
    return schema


def load_schema(task: str, value: str | Path | Any) -> Schema:
    """A schema from a JSON file path, a JSON string, a comma list (``"person,location"``) or Python data."""
    if isinstance(value, (str, Path)) and not str(value).lstrip().startswith(("[", "{")):
        path = Path(value)
        if path.suffix in (".json", ".jsonl") or path.exists():
            if not path.is_file():
                raise KnowlmError(f"schema file not found: {path}")
            try:
                data = json.loads(read_text(path))
            except json.JSONDecodeError as exc:
                raise KnowlmError(f"{path}: invalid JSON ({exc.msg})") from None
            return make_schema(task, data, where=str(path))
    return make_schema(task, value)


def batch_schema(items: Sequence, split_num: int) -> list[list]:
    """Split ``items`` into batches of ``split_num``, keeping input order.

    A remainder smaller than ``max(1, split_num // 2)`` joins the last batch (no prompt asks
    about one lonely type); otherwise it is a batch of its own. ``split_num <= 0``: one batch.
    """
    items = list(items)
    if split_num <= 0 or len(items) <= split_num:
        return [items] if items else []
    batches = [items[i : i + split_num] for i in range(0, len(items), split_num)]
    if len(batches) > 1 and len(batches[-1]) < max(1, split_num // 2):
        batches[-2].extend(batches.pop())
    return batches


def sample_negatives(
    positives: Iterable[str],
    candidates: Sequence,
    ratio: float,
    rng: random.Random,
    hard_groups: Sequence[Sequence[str]] = (),
) -> list:
    """Schema items the text does *not* contain, to teach the model to answer ``[]``.

    ``ratio`` is negatives per positive (at least one when there are none, so empty texts still
    ask something); ``hard_groups`` lists confusable types: when one is positive the others in
    its group are taken first (hard negatives; a random sample of them when there are more).
    """
    pos = set(positives)
    pool = [c for c in candidates if item_name(c) not in pos]
    if not pool or ratio <= 0:
        return []
    want = min(len(pool), max(1, round(ratio * max(1, len(pos)))))
    by_name = {item_name(c): c for c in pool}
    hard: list = []
    for group in hard_groups:
        if pos & set(group):
            hard.extend(by_name[g] for g in group if g in by_name and by_name[g] not in hard)
    chosen = hard[:want] if len(hard) <= want else rng.sample(hard, want)
    rest = [c for c in pool if c not in chosen]
    chosen += rng.sample(rest, min(len(rest), want - len(chosen)))
    return chosen
