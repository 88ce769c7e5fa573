"""Free-text answers -> IE items: every tuple and line format KnowLM-family models were taught.

The formats come from the projects that trained those models (each may follow the prefix line
``输入中包含的实体是：`` / ``关系三元组是：`` / ``事件是：`` and say ``NAN`` for "nothing"):

* KnowLM ``examples/ie_prompt.py`` / DeepKE InstructKGC relation formats 0–3 (zh and en):
  ``(头实体,关系,尾实体)``, ``头实体是h,关系是r,尾实体是t`` (or on three lines),
  ``关系：头实体,尾实体``, ``[{'head':'', 'relation':'', 'tail':''}, ]``; English also
  ``[h, r, t]``, ``<h, r, t>``, ``{h, r, t}`` and ``Subject is h,Relation is r,Object is t``.
* The matching entity formats (``(实体,实体类型)``, ``实体是e\\n实体类型是t``, ``实体类型：实体``,
  ``[{'entity':'', 'entity_type':''}]``, ``{'Entity':'', 'Type':''}``).
* Event formats: knowlm's ``(触发词,事件类型,[(论元,角色), ...])``; KG2Instruction/InstructIE
  ``(裁员,组织关系-裁员,时间#5月份;裁员人数#900余人)`` (also type first, ``Role#Name; ...``,
  or ``NAN``) for EE and EEA; ``(触发词,事件类型)`` for EET; ``事件触发词是x,事件类型是y`` with
  ``\\t事件论元是a,论元角色是r`` lines; ``事件类型：触发词`` with ``\\t角色：论元`` lines;
  ``[{'event_trigger', 'event_type', 'arguments': [{'argument', 'role'}]}]``.

Which element is the type, the role or the span is decided by the schema, never by position
alone, so both orders of a pair parse. An event whose trigger is ``NAN`` and has no argument is
"no event" (nothing, not a failure). Entities and relations are read here, events in
:mod:`knowlm.ie.freetext_events`, both with the scanners of :mod:`knowlm.ie.freetext_scan`.
"""

from __future__ import annotations

import re
from typing import Any

from knowlm.ie.freetext_events import parse_events
from knowlm.ie.freetext_scan import (
    COMMA,
    Names,
    Tally,
    dicts,
    first_field,
    groups,
    is_nan,
    literal_objects,
    split_end,
    split_once,
    text_value,
    tuples,
)
from knowlm.ie.schema import Schema

_PREFIX = re.compile(r"输入中包含的(?:实体|关系三元组|三元组|事件|论元)(?:是|为)?[:：]?\s*")
_FAMILY = {"ner": "entity", "re": "relation", "spo": "relation", "ee": "event", "eea": "event", "eet": "event"}


# ---------------------------------------------------------------- entities


def _entity(tally: Tally, names: Names, span: Any, etype: Any) -> None:
    tally.seen += 1
    span, name = text_value(span), names.get(etype)
    if name is None:
        tally.unknown += 1
    elif span:
        tally.items.append({"text": span, "type": name})


def _entities(body: str, schema: Schema, tally: Tally) -> None:
    names = Names(schema.names())
    records = [d for d in dicts(literal_objects(body)) if first_field(d, "entity_type", "type", "label") is not None]
    for d in records:
        _entity(tally, names, first_field(d, "entity", "text", "name", "mention"), first_field(d, "entity_type", "type", "label"))
    if tally.seen:
        return
    for m in re.finditer(r"实体是([^\n]{0,300}?)(?:[,，]\s*|\n\s*)实体类型是([^\n]*)", body):
        _entity(tally, names, m.group(1), m.group(2).strip().rstrip("，,。"))
    if tally.seen:
        return
    for content in tuples(body):
        if is_nan(content):
            continue
        split = split_end(content, names)
        tally.seen += 1
        if split is None:
            tally.unknown += 1
        elif split[0] and not is_nan(split[0]):
            tally.items.append({"text": split[0], "type": split[1]})
    if tally.seen:
        return
    for line in body.splitlines():  # 实体类型：实体
        split = split_once(line, r"[:：]")
        if split is not None and names.get(split[0]) is not None:
            _entity(tally, names, split[1], split[0])


# ---------------------------------------------------------------- relations


def _relation(tally: Tally, names: Names, head: Any, rel: Any, tail: Any) -> None:
    tally.seen += 1
    head, tail, name = text_value(head), text_value(tail), names.get(rel)
    if name is None:
        tally.unknown += 1
    elif head and tail:
        tally.items.append({"head": head, "relation": name, "tail": tail})


def _split_middle(content: str, names: Names) -> tuple[str, str, str] | None:
    for name in names.names:
        m = re.search(COMMA + re.escape(name) + COMMA, content)
        if m:
            return content[: m.start()].strip(), name, content[m.end() :].strip()
    return None


def _relations(body: str, schema: Schema, tally: Tally) -> None:
    names = Names(schema.names())
    heads = ("head", "subject", "sub", "头实体", "主体")
    rels = ("relation", "predicate", "rel", "关系")
    tails = ("tail", "object", "obj", "尾实体", "客体")
    for d in dicts(literal_objects(body)):
        if first_field(d, *rels) is not None and first_field(d, *heads) is not None:
            _relation(tally, names, first_field(d, *heads), first_field(d, *rels), first_field(d, *tails))
    if tally.seen:
        return
    labelled = (
        r"头实体是([^\n]{0,300}?)(?:[,，]\s*|\n\s*)关系是([^\n]{0,300}?)(?:[,，]\s*|\n\s*)尾实体是([^\n]*)",
        r"(?i)subject is ([^\n]{0,300}?),\s*relation is ([^\n]{0,300}?),\s*object is ([^\n]*)",
    )
    for pattern in labelled:
        for m in re.finditer(pattern, body):
            _relation(tally, names, m.group(1), m.group(2).strip(), m.group(3))
    if tally.seen:
        return
    for pairs in ("()", "（）", "[]", "<>", "{}"):
        contents = list(groups(body, pairs))
        for content in contents:
            if is_nan(content) or (pairs == "{}" and ":" in content):
                continue
            triple = _split_middle(content, names)
            if triple is None:
                if pairs in ("()", "（）"):  # only parentheses are sure to be answers
                    tally.seen += 1
                    tally.unknown += 1
                continue
            _relation(tally, names, *triple)
        if tally.seen:
            return
    for line in body.splitlines():  # 关系：头实体,尾实体
        split = split_once(line, r"[:：]")
        pair = split_once(split[1]) if split is not None and names.get(split[0]) is not None else None
        if pair is not None:
            _relation(tally, names, pair[0], split[0], pair[1])


# ---------------------------------------------------------------- entry point


def parse_free_text(output: str, schema: Schema, notes: list[str]) -> tuple[list[dict], str | None, bool]:
    """(items, error, answered): error is ``no_tuples`` or ``unknown_type``; ``answered`` is True
    when the output is a recognisable answer, including an explicit "nothing" (``NAN``, ``无``)."""
    body = _PREFIX.sub("", output)
    lines = [line for line in body.splitlines() if not is_nan(line)]
    if not lines:
        return [], None, True
    body = "\n".join(lines)
    tally = Tally()
    family = _FAMILY[schema.task]
    if family == "entity":
        _entities(body, schema, tally)
    elif family == "relation":
        _relations(body, schema, tally)
    else:
        parse_events(body, schema, tally, notes)
    if tally.unknown:
        notes.append(f"unknown_type_dropped:{tally.unknown}")
    if not tally.seen:
        return [], "no_tuples", False
    if not tally.items and tally.unknown == tally.seen:
        return [], "unknown_type", False
    return tally.items, None, True
