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
"no event" (nothing, not a failure).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from typing import Any, Iterator

from knowlm.ie.schema import Schema

NAN_WORDS = {"nan", "none", "null", "", "无", "n/a", "-", "没有", "空", "no", "[]", "{}"}
_PREFIX = re.compile(r"输入中包含的(?:实体|关系三元组|三元组|事件|论元)(?:是|为)?[:：]?\s*")
_COMMA = r"\s*[,，]\s*"
_FAMILY = {"ner": "entity", "re": "relation", "spo": "relation", "ee": "event", "eea": "event", "eet": "event"}


def _norm(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def is_nan(value: Any) -> bool:
    return isinstance(value, str) and value.strip().strip("。.").strip().lower() in NAN_WORDS


class _Names:
    """Schema names matched exactly, then after NFKC/case/space normalisation."""

    def __init__(self, names: list[str]):
        self.names = sorted(dict.fromkeys(names), key=len, reverse=True)  # longest first
        self.by_norm = {_norm(n): n for n in reversed(self.names)}

    def get(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        value = value.strip()
        return value if value in self.by_norm.values() else self.by_norm.get(_norm(value))


class _Tally:
    """What one answer held: units that looked like answers, and those naming an unknown type."""

    def __init__(self) -> None:
        self.seen = 0
        self.unknown = 0
        self.items: list[dict] = []


# ---------------------------------------------------------------- scanning


def groups(text: str, pairs: str = "()") -> Iterator[str]:
    """Contents of the top-level bracket groups of one kind (nesting respected)."""
    opening, closing = pairs
    depth, start = 0, -1
    for i, ch in enumerate(text):
        if ch == opening:
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == closing and depth:
            depth -= 1
            if depth == 0:
                yield text[start:i]


def _tuples(text: str) -> list[str]:
    """ASCII-parenthesised tuples, else full-width ones (a span may hold the other kind)."""
    found = list(groups(text, "()"))
    return found if found else list(groups(text, "（）"))


def literal_objects(text: str) -> list[Any]:
    """Every top-level ``{...}`` / ``[...]`` chunk that reads as JSON or a Python literal
    (single quotes, trailing commas)."""
    out: list[Any] = []
    depth, start, quote = 0, -1, ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
            continue
        if ch in "'\"" and depth:
            quote = ch
        elif ch in "{[":
            if depth == 0:
                start = i
            depth += 1
        elif ch in "}]" and depth:
            depth -= 1
            if depth == 0:
                value = _read_literal(text[start : i + 1])
                if value is not None:
                    out.append(value)
    return out


def _read_literal(chunk: str) -> Any:
    for attempt in (chunk, re.sub(r",\s*([\]\}])", r"\1", chunk)):
        try:
            return json.loads(attempt, strict=False)
        except json.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(attempt)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    return None


def _dicts(values: list[Any]) -> list[dict]:
    out = []
    for value in values:
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, dict))
    return out


def _field(d: dict, *keys: str) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in d.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _split_once(text: str, pattern: str = r"[,，]", last: bool = False) -> tuple[str, str] | None:
    """``text`` cut at the first (or last) separator matching ``pattern``; None without one."""
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    m = matches[-1] if last else matches[0]
    return text[: m.start()].strip(), text[m.end() :].strip()


def _text(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or is_nan(value):
        return None
    return value.strip()


# ---------------------------------------------------------------- entities


def _entity(tally: _Tally, names: _Names, span: Any, etype: Any) -> None:
    tally.seen += 1
    span, name = _text(span), names.get(etype)
    if name is None:
        tally.unknown += 1
    elif span:
        tally.items.append({"text": span, "type": name})


def _split_end(content: str, names: _Names) -> tuple[str, str] | None:
    """``"浙江大学,组织机构"`` -> (span, name) when a field at the end (else the start) is a schema name."""
    for name in names.names:
        m = re.search(_COMMA + re.escape(name) + r"\s*$", content)
        if m:
            return content[: m.start()].strip(), name
    for name in names.names:
        m = re.match(r"^\s*" + re.escape(name) + _COMMA, content)
        if m:
            return content[m.end() :].strip(), name
    return None


def _entities(body: str, schema: Schema, tally: _Tally) -> None:
    names = _Names(schema.names())
    records = [d for d in _dicts(literal_objects(body)) if _field(d, "entity_type", "type", "label") is not None]
    for d in records:
        _entity(tally, names, _field(d, "entity", "text", "name", "mention"), _field(d, "entity_type", "type", "label"))
    if tally.seen:
        return
    for m in re.finditer(r"实体是([^\n]{0,300}?)(?:[,，]\s*|\n\s*)实体类型是([^\n]*)", body):
        _entity(tally, names, m.group(1), m.group(2).strip().rstrip("，,。"))
    if tally.seen:
        return
    for content in _tuples(body):
        if is_nan(content):
            continue
        split = _split_end(content, names)
        tally.seen += 1
        if split is None:
            tally.unknown += 1
        elif split[0] and not is_nan(split[0]):
            tally.items.append({"text": split[0], "type": split[1]})
    if tally.seen:
        return
    for line in body.splitlines():  # 实体类型：实体
        split = _split_once(line, r"[:：]")
        if split is not None and names.get(split[0]) is not None:
            _entity(tally, names, split[1], split[0])


# ---------------------------------------------------------------- relations


def _relation(tally: _Tally, names: _Names, head: Any, rel: Any, tail: Any) -> None:
    tally.seen += 1
    head, tail, name = _text(head), _text(tail), names.get(rel)
    if name is None:
        tally.unknown += 1
    elif head and tail:
        tally.items.append({"head": head, "relation": name, "tail": tail})


def _split_middle(content: str, names: _Names) -> tuple[str, str, str] | None:
    for name in names.names:
        m = re.search(_COMMA + re.escape(name) + _COMMA, content)
        if m:
            return content[: m.start()].strip(), name, content[m.end() :].strip()
    return None


def _relations(body: str, schema: Schema, tally: _Tally) -> None:
    names = _Names(schema.names())
    heads = ("head", "subject", "sub", "头实体", "主体")
    rels = ("relation", "predicate", "rel", "关系")
    tails = ("tail", "object", "obj", "尾实体", "客体")
    for d in _dicts(literal_objects(body)):
        if _field(d, *rels) is not None and _field(d, *heads) is not None:
            _relation(tally, names, _field(d, *heads), _field(d, *rels), _field(d, *tails))
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
        split = _split_once(line, r"[:：]")
        pair = _split_once(split[1]) if split is not None and names.get(split[0]) is not None else None
        if pair is not None:
            _relation(tally, names, pair[0], split[0], pair[1])


# ---------------------------------------------------------------- events


class _Events:
    """Builds events for EE/EEA/EET against the schema's types and roles."""

    def __init__(self, schema: Schema, tally: _Tally, notes: list[str]):
        self.schema, self.tally, self.notes = schema, tally, notes
        self.types = _Names(schema.names())

    def roles(self, etype: str) -> _Names:
        return _Names(list(self.schema.roles(etype)))

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
            span = _text(span)
            if span and role and not is_nan(role):
                arguments.append({"text": span, "role": role})
        trigger = _text(trigger)
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
            split = _split_once(after)
            trigger, rest = split if split is not None else (after, "")
            if not bracketed:
                args_part = rest
        pairs: list[tuple[str, str]] = []
        if bracketed:
            for inner in _tuples(args_part):
                split = _split_end(inner, self.roles(name)) if self.schema.roles(name) else None
                split = split or _split_once(inner, last=True)
                if split is not None:
                    pairs.append(split)
        else:
            for piece in re.split(r"[;；]", args_part):
                if "#" in piece:
                    a, _, b = piece.partition("#")
                    pairs.append((b, a))  # KG2Instruction writes role#argument; roles() sorts out the order
        self.add(trigger, name, pairs)


def _events(body: str, schema: Schema, tally: _Tally, notes: list[str]) -> None:
    ev = _Events(schema, tally, notes)
    for d in _dicts(literal_objects(body)):
        etype = _field(d, "event_type", "type")
        if etype is None:
            continue
        raw = _field(d, "arguments", "args", "argument")
        pairs: list[tuple[Any, Any]] = []
        if isinstance(raw, list):
            pairs = [(_field(a, "argument", "text", "name"), _field(a, "role")) for a in raw if isinstance(a, dict)]
        elif isinstance(raw, dict):
            pairs = [(v, k) for k, vs in raw.items() for v in (vs if isinstance(vs, list) else [vs])]
        elif isinstance(raw, str):
            pairs = [(p.partition("#")[2], p.partition("#")[0]) for p in re.split(r"[;；]", raw) if "#" in p]
        ev.add(_field(d, "event_trigger", "trigger"), etype, pairs)
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
    for content in _tuples(body):
        if not is_nan(content):
            ev.from_fields(content)
    if tally.seen:
        return
    current: list | None = None  # 事件类型：触发词 then indented 角色：论元 lines
    for line in body.splitlines():
        parts = _split_once(line.strip(), r"[:：]")
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


# ---------------------------------------------------------------- entry point


def parse_free_text(output: str, schema: Schema, notes: list[str]) -> tuple[list[dict], str | None, bool]:
    """(items, error, answered): error is ``no_tuples`` or ``unknown_type``; ``answered`` is True
    when the output is a recognisable answer, including an explicit "nothing" (``NAN``, ``无``)."""
    body = _PREFIX.sub("", output)
    lines = [line for line in body.splitlines() if not is_nan(line)]
    if not lines:
        return [], None, True
    body = "\n".join(lines)
    tally = _Tally()
    family = _FAMILY[schema.task]
    if family == "entity":
        _entities(body, schema, tally)
    elif family == "relation":
        _relations(body, schema, tally)
    else:
        _events(body, schema, tally, notes)
    if tally.unknown:
        notes.append(f"unknown_type_dropped:{tally.unknown}")
    if not tally.seen:
        return [], "no_tuples", False
    if not tally.items and tally.unknown == tally.seen:
        return [], "unknown_type", False
    return tally.items, None, True
