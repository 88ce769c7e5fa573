"""IE record v1 (DESIGN §3): one text with its entities, relations and events.

Gold files, predictions, converters and the scorer all speak this one format. ``validate``
turns a malformed record into a clear one-line error naming the field, instead of a silent
zero score later.
"""

from __future__ import annotations

from typing import Any

from knowlm.data.sentences import detect_lang  # one language detector for the whole project
from knowlm.errors import KnowlmError

VERSION = 1
NA_RELATIONS = frozenset({"na", "no_relation", "other", "none", "nota"})
FIELDS = {"entities": ("text", "type"), "relations": ("head", "relation", "tail"), "events": ("trigger", "type")}


def is_na(relation: Any) -> bool:
    """``NA``, ``no_relation``, ``Other`` (any case) mean "no relation" and are never scored."""
    return str(relation).strip().lower() in NA_RELATIONS


def new_record(text: str, id: str | None = None, lang: str | None = None, source: str | None = None) -> dict:
    record: dict[str, Any] = {"id": id, "text": text, "lang": lang or detect_lang(text)}
    if source:
        record["source"] = source
    record.update({"entities": [], "relations": [], "events": []})
    return record


def require_ie_fields(record: Any, where: str = "record", prediction: bool = False) -> dict:
    """An IE record must carry at least one of entities/relations/events (a prediction may carry
    ``parse_error`` instead): a file of other JSON objects is the wrong file, not a score of 0."""
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object, got {type(record).__name__}")
    fields = (*FIELDS, "parse_error", "parse_errors") if prediction else tuple(FIELDS)
    if not any(name in record for name in fields):
        keys = ", ".join(list(record)[:6]) or "none"
        raise KnowlmError(f"{where}: not an IE record (needs {', '.join(FIELDS)}; has keys {keys})")
    return validate(record, where)


def validate(record: Any, where: str = "record") -> dict:
    """Check and normalise one record; returns it with all three lists present.

    Raises :class:`KnowlmError` naming the first bad field.
    """
    if not isinstance(record, dict):
        raise KnowlmError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("text", ""), str):
        raise KnowlmError(f"{where}: 'text' must be a string")
    # Accept the common aliases so a gold file in subject/object form does not score 0.
    for rel in record.get("relations") or []:
        if isinstance(rel, dict):
            if "head" not in rel and "subject" in rel:
                rel["head"] = rel.pop("subject")
            if "tail" not in rel and "object" in rel:
                rel["tail"] = rel.pop("object")
            if "relation" not in rel and "predicate" in rel:
                rel["relation"] = rel.pop("predicate")
    for name, required in FIELDS.items():
        value = record.get(name)
        if value is None:
            record[name] = []
            continue
        if not isinstance(value, list):
            raise KnowlmError(f"{where}: '{name}' must be a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise KnowlmError(f"{where}: {name}[{index}] must be an object")
            for key in required:
                if not isinstance(item.get(key), str):
                    raise KnowlmError(f"{where}: {name}[{index}] needs a string '{key}'")
            if name == "entities" and ("start" in item or "end" in item):
                start, end = item.get("start"), item.get("end")
                if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
                    raise KnowlmError(f"{where}: {name}[{index}] has bad offsets start={start!r} end={end!r}")
            if name == "events":
                args = item.setdefault("arguments", [])
                if not isinstance(args, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("text"), str) and isinstance(a.get("role"), str) for a in args
                ):
                    raise KnowlmError(f"{where}: {name}[{index}].arguments must be a list of {{text, role}}")
    return record


def find_span(text: str, span: str, start_from: int = 0) -> tuple[int, int] | None:
    """Character offsets of ``span`` in ``text`` (first occurrence), or None."""
    if not span:
        return None
    index = text.find(span, start_from)
    if index < 0 and start_from:
        index = text.find(span)
    return (index, index + len(span)) if index >= 0 else None


def dedup(items: list[dict], key) -> list[dict]:
    """Drop repeated items (same key), keeping the first; order kept."""
    seen: set = set()
    out = []
    for item in items:
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        out.append(item)
    return out


def entity_key(e: dict) -> tuple:
    return (e["text"], e["type"])


def relation_key(r: dict) -> tuple:
    return (r["head"], r["relation"], r["tail"])


def event_key(e: dict) -> tuple:
    return (e["trigger"], e["type"], tuple(sorted((a["role"], a["text"]) for a in e.get("arguments", []))))
