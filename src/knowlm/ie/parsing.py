"""Model output -> IE record fragment, for any output a model may produce.

Real models echo the prompt, chat before and after the answer, repeat the JSON, stop in the
middle of it, use Chinese punctuation, answer ``head/tail`` instead of ``subject/object``,
invent types, or answer in one of the free-text formats they were tuned on (see
:mod:`knowlm.ie.freetext`). :func:`parse_output` salvages what it can, notes every repair in
``parse_notes`` and, when nothing usable is left, sets ``parse_error`` to one reason from
:data:`ERRORS`. An explicit "nothing" (``NAN``, ``无``, an event whose trigger is ``NAN``) is an
empty answer, not a failure. It never raises on model output.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from knowlm.ie.freetext import parse_free_text
from knowlm.ie.jsonfind import find_json
from knowlm.ie.schema import EventType, Schema, SpoType, make_schema

ERRORS = ("empty", "no_json", "truncated", "not_an_object", "wrong_keys", "bad_values", "unknown_type", "no_tuples", "internal")
NAN_VALUES = {"nan", "none", "null", "", "无", "n/a", "-"}
TASK_FIELD = {"ner": "entities", "re": "relations", "ee": "events", "eet": "events", "eea": "events", "spo": "relations"}


def _norm(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


# ---------------------------------------------------------------- JSON answer -> items

_TEXT_KEYS = ("text", "entity", "name", "mention", "trigger", "event_trigger")


def _texts(value: Any, notes: list[str]) -> list[str]:
    """A schema value as a list of strings: accepts a string, a list, NAN, dicts with a text field."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        value = [value]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        notes.append("bad_value")
        return []
    out = []
    for item in value:
        if isinstance(item, dict):
            item = next((item[k] for k in _TEXT_KEYS if k in item), None)
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            notes.append("bad_value")
            continue
        item = item.strip()
        if item.lower() in NAN_VALUES:
            continue
        out.append(item)
    return out


def _match_keys(obj: dict, names: list[str], notes: list[str]) -> dict[str, Any] | None:
    """Map the answer's keys onto schema names (exact, then normalised). None: no key matched."""
    by_norm = {_norm(n): n for n in names}
    mapped: dict[str, Any] = {}
    unknown = 0
    for key, value in obj.items():
        name = key if key in names else by_norm.get(_norm(str(key)))
        if name is None:
            unknown += 1
            continue
        mapped[name] = value
    if unknown:
        notes.append(f"unknown_keys:{unknown}")
    if obj and not mapped:
        return None
    missing = sum(1 for n in dict.fromkeys(names) if n not in mapped)
    if missing and mapped:
        notes.append(f"missing_keys:{missing}")
    return mapped


def _pair(item: Any, fields_seen: set[str]) -> tuple[str, ...] | None:
    """``(head, tail)``; ``()`` when the pair says "none" (a NAN head or tail, ``{"subject": "x", "object": "无"}``:
    an empty answer, not a broken one); None when unusable."""
    if isinstance(item, dict):
        for a, b in (("subject", "object"), ("head", "tail"), ("sub", "obj"), ("头实体", "尾实体"), ("主体", "客体")):
            if a in item and b in item:
                fields_seen.add(f"{a}/{b}")
                h, t = item[a], item[b]
                break
        else:
            return None
    elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
        h, t = item[0], item[-1]
        fields_seen.add("list")
    else:
        return None
    if isinstance(h, (list, tuple)) and len(h) == 1:
        h = h[0]
    if isinstance(t, (list, tuple)) and len(t) == 1:
        t = t[0]
    if not isinstance(h, str) or not isinstance(t, str) or not h.strip() or not t.strip():
        return None
    if h.strip().lower() in NAN_VALUES or t.strip().lower() in NAN_VALUES:
        return ()
    return h.strip(), t.strip()


def _spo_types(schema: Schema, predicate: str, item: Any) -> tuple[str, str]:
    """Subject/object types of an SPO answer: the answer's own when it names a schema signature, else the first one."""
    signatures = [s for s in schema.items if isinstance(s, SpoType) and s.predicate == predicate]
    if isinstance(item, dict):
        given = (item.get("subject_type"), item.get("object_type"))
        for s in signatures:
            if given == (s.subject_type, s.object_type):
                return given
    return (signatures[0].subject_type, signatures[0].object_type) if signatures else ("", "")


def _from_json(obj: Any, schema: Schema, notes: list[str]) -> tuple[list[dict], str | None]:
    names = schema.names()
    if isinstance(obj, list):  # a flat list of items instead of an object keyed by schema
        obj = _regroup_list(obj, schema)
        if obj is None:
            return [], "not_an_object"
        notes.append("flat_list")
    if not isinstance(obj, dict):
        return [], "not_an_object"
    mapped = _match_keys(obj, names, notes)
    if mapped is None:
        return [], "wrong_keys"
    items: list[dict] = []
    bad = 0
    if schema.task in ("ner", "eet"):
        for name in dict.fromkeys(names):
            for text in _texts(mapped.get(name), notes):
                items.append({"text": text, "type": name} if schema.task == "ner" else {"trigger": text, "type": name, "arguments": []})
    elif schema.task in ("re", "spo"):
        fields_seen: set[str] = set()
        for name in dict.fromkeys(names):
            value = mapped.get(name)
            if value is None or (isinstance(value, str) and value.strip().lower() in NAN_VALUES):
                continue
            for item in value if isinstance(value, list) else [value]:
                pair = _pair(item, fields_seen)
                if not pair:
                    bad += pair is None
                    continue
                rel = {"head": pair[0], "relation": name, "tail": pair[1]}
                if schema.task == "spo":
                    rel["head_type"], rel["tail_type"] = _spo_types(schema, name, item)
                items.append(rel)
        notes.extend(f"fields:{f}" for f in sorted(fields_seen))
    else:
        for item in schema.items:
            value = mapped.get(item.name)
            if value is None or isinstance(value, str):
                continue
            for event in value if isinstance(value, list) else [value]:
                parsed = _event(event, item, schema.task, notes)
                if parsed is None:
                    bad += 1
                elif parsed:
                    items.append(parsed)
    if bad:
        notes.append(f"bad_items_dropped:{bad}")
    if bad and not items and _only_bad(mapped):
        return [], "bad_values"
    return items, None


def _only_bad(mapped: dict) -> bool:
    """True when every non-empty value was unusable (so the answer is wrong, not empty)."""
    return any(v not in (None, [], "") for v in mapped.values())


def _event(event: Any, item: EventType, task: str, notes: list[str]) -> dict | None:
    """One event of type ``item``; None when unusable, ``{}`` when it says "no event" (a NAN trigger, no argument).

    EE answers ``{"trigger", "arguments": {role: text}}``; EEA answers (IEPile) the arguments dict
    itself, ``{role: text}``, the trigger being given in the prompt."""
    if not isinstance(event, dict):
        return None
    trigger = event.get("trigger", event.get("event_trigger", event.get("触发词")))
    if isinstance(trigger, list):
        trigger = trigger[0] if trigger else None
    raw_args = event.get("arguments", event.get("args", event.get("论元")))
    if task == "eea" and raw_args is None:
        raw_args = {k: v for k, v in event.items() if k not in ("trigger", "event_trigger", "触发词")}
        if trigger is None and len(item.triggers) == 1:
            trigger = item.triggers[0]
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw_args, dict):
        pairs = list(raw_args.items())
    elif isinstance(raw_args, list):
        for a in raw_args:
            if isinstance(a, dict) and "role" in a:
                pairs.append((a["role"], a.get("argument", a.get("text"))))
    roles = set(item.roles)
    arguments = []
    for role, value in pairs:
        if roles and role not in roles:
            notes.append("unknown_role")
            continue
        for text in _texts(value, notes):
            arguments.append({"text": text, "role": str(role)})
    if isinstance(trigger, str) and trigger.strip().lower() in NAN_VALUES:
        trigger = ""  # no trigger: IEPile writes NAN for events the text names only by their arguments
    if task == "eea":
        if not arguments:
            return {}  # IEPile: an event with no argument found is no answer
        trigger = trigger if isinstance(trigger, str) else ""
    elif not isinstance(trigger, str):
        return None
    elif not trigger.strip() and not arguments:
        notes.append("nan_event")
        return {}
    return {"trigger": trigger.strip(), "type": item.name, "arguments": arguments}


def _regroup_list(items: list, schema: Schema) -> dict | None:
    """``[{"text", "type"}]`` / ``[{"subject", "relation", "object"}]`` / ``[{"event_type", ...}]`` -> keyed object."""
    grouped: dict[str, list] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        key = item.get("type") or item.get("relation") or item.get("predicate") or item.get("event_type") or item.get("label")
        if not isinstance(key, str):
            return None
        grouped.setdefault(key, []).append(item)
    return grouped


# ---------------------------------------------------------------- grounding in the text


def _occurs(span: str, text: str, norm_text: str) -> bool:
    return span in text or _norm(span) in norm_text


def _ground(items: list[dict], field: str, text: str, notes: list[str], drop: bool) -> list[dict]:
    """Drop spans not in ``text`` (hallucinations) and add offsets to entities."""
    norm_text = _norm(text)
    kept, dropped = [], 0
    for item in items:
        if field == "entities":
            ok = _occurs(item["text"], text, norm_text)
        elif field == "relations":
            ok = _occurs(item["head"], text, norm_text) and _occurs(item["tail"], text, norm_text)
        else:
            ok = _occurs(item["trigger"], text, norm_text)
            if ok and drop:
                args = [a for a in item["arguments"] if _occurs(a["text"], text, norm_text)]
                dropped += len(item["arguments"]) - len(args)
                item["arguments"] = args
        if not ok and drop:
            dropped += 1
            continue
        if field == "entities":
            index = text.find(item["text"])
            if index >= 0:
                item["start"], item["end"] = index, index + len(item["text"])
        kept.append(item)
    if dropped:
        notes.append(f"dropped_hallucinated:{dropped}")
    return kept


def _drop_self_relations(items: list[dict], notes: list[str]) -> list[dict]:
    """A relation from an entity to itself (``Warsaw country Warsaw``) is never an answer: a small
    model writes one when it has a relation key to fill and no second argument."""
    kept = [r for r in items if r["head"].strip() != r["tail"].strip()]
    if len(kept) < len(items):
        notes.append(f"dropped_self_relation:{len(items) - len(kept)}")
    return kept


def _dedup(items: list[dict], field: str) -> list[dict]:
    from knowlm.ie.records import dedup, entity_key, event_key, relation_key

    return dedup(items, {"entities": entity_key, "relations": relation_key, "events": event_key}[field])


# ---------------------------------------------------------------- entry point


def _parse(output: str, schema: Schema, style: str, notes: list[str]) -> tuple[list[dict], str | None]:
    """Items and error reason; a JSON-style model may answer in tuples and a tuple-style one in JSON."""
    if style == "json":
        obj, json_notes, error = find_json(output)
        notes.extend(json_notes)
        items: list[dict] = []
        if error is None:
            items, error = _from_json(obj, schema, notes)
        if error in ("no_json", "wrong_keys", "not_an_object", "truncated"):
            text_notes: list[str] = []
            text_items, text_error, answered = parse_free_text(output, schema, text_notes)
            if text_error is None and answered:
                notes.extend(text_notes + ["free_text_answer"])
                return text_items, None
        return items, error
    items, error, _ = parse_free_text(output, schema, notes)
    if error == "no_tuples":
        obj, json_notes, json_error = find_json(output)
        if json_error is None:
            json_items, json_error = _from_json(obj, schema, json_notes)
            if json_error is None:
                notes.extend(json_notes + ["json_answer"])
                return json_items, None
    return items, error


def parse_output(
    output: Any, task: str, schema: Any, style: str = "json", text: str | None = None, drop_hallucinated: bool = True
) -> dict:
    """An IE record fragment ``{"entities"|"relations"|"events": [...]}`` read from ``output``.

    ``task``: ner, re, ee, eet (event types and triggers), eea (arguments of given event types)
    or spo (relations with typed subject and object). ``parse_notes`` lists repairs
    (``trailing_text``, ``repaired_truncated``, ``fields:head/tail``, ``free_text_answer``…);
    ``parse_error`` is set (and the list empty) when nothing usable was found. With ``text``,
    spans that do not occur in it are dropped (unless ``drop_hallucinated=False``) and entities
    get ``start``/``end``. Schema or task errors (the caller's) raise KnowlmError; model output never raises.
    """
    schema = make_schema(task, schema)
    field = TASK_FIELD[schema.task]
    notes: list[str] = []
    try:
        if not isinstance(output, str):
            output = "" if output is None else str(output)
        if not output.strip():
            return {field: [], "parse_error": "empty", "parse_notes": notes}
        items, error = _parse(output, schema, style, notes)
        if error is not None:
            return {field: [], "parse_error": error, "parse_notes": notes}
        if schema.task == "spo":  # a free-text SPO answer takes its types from the schema signature
            for rel in items:
                if "head_type" not in rel:
                    rel["head_type"], rel["tail_type"] = _spo_types(schema, rel["relation"], None)
        items = _dedup(items, field)
        if field == "relations":
            items = _drop_self_relations(items, notes)
        if text is not None:
            items = _ground(items, field, text, notes, drop_hallucinated)
        return {field: items, "parse_notes": notes}
    except Exception as exc:  # noqa: BLE001 - the contract: model output never raises
        return {field: [], "parse_error": "internal", "parse_notes": notes + [f"{type(exc).__name__}: {exc}"[:200]]}
