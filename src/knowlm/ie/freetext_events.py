"""Free-text event answers (EE, EEA, EET) -> events, against the schema's types and roles.

Formats, tried in this order until one yields answer units: dict literals
(``[{'event_trigger', 'event_type', 'arguments': [...]}]``), labelled lines (``事件触发词是x,事件类型是y``
with ``事件论元是a,论元角色是r`` lines, and the English wording), tuples (knowlm's
``(触发词,事件类型,[(论元,角色), ...])`` and KG2Instruction's ``(裁员,组织关系-裁员,时间#5月份;...)``, either
order) and ``事件类型：触发词`` lines with indented ``角色：论元`` lines.
"""

from __future__ import annotations

import re
from typing import Any

from knowlm.ie.freetext_scan import (
    Names,
    Tally,
    dicts,
    first_field,
    is_nan,
    literal_objects,
    split_end,
    split_once,
    text_value,
    tuples,
)
from knowlm.ie.schema import Schema


class Events:
    """Builds events for EE/EEA/EET against the schema's types and roles."""

    def __init__(self, schema: Schema, tally: Tally, notes: list[str]):
        self.schema, self.tally, self.notes = schema, tally, notes
        self.types = Names(schema.names())

    def roles(self, etype: str) -> Names:
        return Names(list(self.schema.roles(etype)))

    def add(self, trigger: Any, etype: Any, pairs: list[tuple[Any, Any]]) -> None:
        """``pairs``: (argument, role) candidates in either order; the schema's roles decide."""
        self.tally.seen += 1
        name = self.types.get(etype)
        if name is None:
            self.tally.unknown += 1
            return
        roles, known = self.roles(name), bool(self.schema.roles(name))
        arguments = []
        for a, b in pairs:
            if self.schema.task == "eet":
                break
            role, span = roles.get(b), a
            if role is None and roles.get(a) is not None:
                role, span = roles.get(a), b
            if role is None:
                if known:
                    self.notes.append("unknown_role")
                    continue
                role, span = str(b).strip(), a
            span = text_value(span)
            if span and role and not is_nan(role):
                arguments.append({"text": span, "role": role})
        trigger = text_value(trigger)
        if trigger is None and not arguments:
            self.notes.append("nan_event")  # "no event of this type": nothing, not a failure
            return
        self.tally.items.append({"trigger": trigger or "", "type": name, "arguments": arguments})

    def from_fields(self, content: str) -> None:
        """``trigger,type,args`` / ``type,trigger,args`` with args ``[(arg,role),...]``, ``role#arg;...`` or NAN."""
        head, args_part, bracketed = content, "", False
        if "[" in content:
            head, _, rest = content.partition("[")
            args_part, bracketed = rest.rsplit("]", 1)[0], True
        head = head.strip().rstrip(",，").strip()
        found = None
        for name in self.types.names:
            m = re.search(r"(?:^|[,，])\s*" + re.escape(name) + r"\s*(?=[,，]|$)", head)
            if m:
                found = (name, m)
                break
        if found is None:
            self.tally.seen += 1
            self.tally.unknown += 1
            return
        name, m = found
        before, after = head[: m.start()].strip(), head[m.end() :].lstrip(",， ")
        if before:  # trigger first: the rest after the type is the arguments
            trigger = before
            if not bracketed:
                args_part = after
        else:  # type first: the next field is the trigger
            split = split_once(after)
            trigger, rest = split if split is not None else (after, "")
            if not bracketed:
                args_part = rest
        pairs: list[tuple[str, str]] = []
        if bracketed:
            for inner in tuples(args_part):
                split = split_end(inner, self.roles(name)) if self.schema.roles(name) else None
                split = split or split_once(inner, last=True)
                if split is not None:
                    pairs.append(split)
        else:
            for piece in re.split(r"[;；]", args_part):
                if "#" in piece:
                    a, _, b = piece.partition("#")
                    pairs.append((b, a))  # KG2Instruction writes role#argument; roles() sorts out the order
        self.add(trigger, name, pairs)


def parse_events(body: str, schema: Schema, tally: Tally, notes: list[str]) -> None:
    ev = Events(schema, tally, notes)
    for d in dicts(literal_objects(body)):
        etype = first_field(d, "event_type", "type")
        if etype is None:
            continue
        raw = first_field(d, "arguments", "args", "argument")
        pairs: list[tuple[Any, Any]] = []
        if isinstance(raw, list):
            pairs = [(first_field(a, "argument", "text", "name"), first_field(a, "role")) for a in raw if isinstance(a, dict)]
        elif isinstance(raw, dict):
            pairs = [(v, k) for k, vs in raw.items() for v in (vs if isinstance(vs, list) else [vs])]
        elif isinstance(raw, str):
            pairs = [(p.partition("#")[2], p.partition("#")[0]) for p in re.split(r"[;；]", raw) if "#" in p]
        ev.add(first_field(d, "event_trigger", "trigger"), etype, pairs)
    if tally.seen:
        return
    head_res = (
        (r"事件触发词是([^\n]{0,300}?)[,，]\s*事件类型是([^\n]*)", r"事件论元是([^\n]{0,300}?)[,，]\s*论元角色是([^\n]*)"),
        (r"(?i)event trigger is ([^\n]{0,300}?),\s*event type is ([^\n]*)", r"(?i)argument is ([^\n]{0,300}?),\s*argument role is ([^\n]*)"),
    )
    for head_re, arg_re in head_res:
        heads = list(re.finditer(head_re, body))
        for k, m in enumerate(heads):
            block = body[m.end() : heads[k + 1].start() if k + 1 < len(heads) else len(body)]
            pairs = [(a.group(1), a.group(2).strip()) for a in re.finditer(arg_re, block)]
            ev.add(m.group(1), m.group(2).strip(), pairs)
        if tally.seen:
            return
    for content in tuples(body):
        if not is_nan(content):
            ev.from_fields(content)
    if tally.seen:
        return
    current: list | None = None  # 事件类型：触发词 then indented 角色：论元 lines
    for line in body.splitlines():
        parts = split_once(line.strip(), r"[:：]")
        if parts is None:
            continue
        if not line[:1].isspace() and ev.types.get(parts[0]) is not None:
            if current:
                ev.add(*current)
            current = [parts[1], parts[0], []]
        elif current is not None:
            current[2].append((parts[1], parts[0]))
    if current:
        ev.add(*current)
