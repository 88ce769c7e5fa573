"""Scanning free-text IE answers: bracket groups, literals, separators, schema names.

The pieces every answer family (entities, relations, events, :mod:`knowlm.ie.freetext`) reads an
answer with. Names are matched against the schema exactly, then after NFKC/case/space
normalisation, longest first, so a type that contains another is not cut short.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from typing import Any, Iterator

NAN_WORDS = {"nan", "none", "null", "", "无", "n/a", "-", "没有", "空", "no", "[]", "{}"}
COMMA = r"\s*[,，]\s*"


def _norm(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def is_nan(value: Any) -> bool:
    """An explicit "nothing" (``NAN``, ``None.``, ``无。``, an empty string); a bare full stop is not one:
    an untuned model that answers ``.`` has answered nothing, not "no items"."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    word = text.strip("。.").strip()
    return word.lower() in NAN_WORDS and (word != "" or text == "")


class Names:
    """Schema names matched exactly, then after NFKC/case/space normalisation."""

    def __init__(self, names: list[str]):
        self.names = sorted(dict.fromkeys(names), key=len, reverse=True)  # longest first
        self.by_norm = {_norm(n): n for n in reversed(self.names)}

    def get(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        value = value.strip()
        return value if value in self.by_norm.values() else self.by_norm.get(_norm(value))


class Tally:
    """What one answer held: units that looked like answers, and those naming an unknown type."""

    def __init__(self) -> None:
        self.seen = 0
        self.unknown = 0
        self.items: list[dict] = []


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


def tuples(text: str) -> list[str]:
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


def dicts(values: list[Any]) -> list[dict]:
    out = []
    for value in values:
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, dict))
    return out


def first_field(d: dict, *keys: str) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in d.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def split_once(text: str, pattern: str = r"[,，]", last: bool = False) -> tuple[str, str] | None:
    """``text`` cut at the first (or last) separator matching ``pattern``; None without one."""
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    m = matches[-1] if last else matches[0]
    return text[: m.start()].strip(), text[m.end() :].strip()


def text_value(value: Any) -> str | None:
    """A span as written (numbers as text); None for a non-string or a "nothing" word."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or is_nan(value):
        return None
    return value.strip()


def split_end(content: str, names: Names) -> tuple[str, str] | None:
    """``"浙江大学,组织机构"`` -> (span, name) when a field at the end (else the start) is a schema name."""
    for name in names.names:
        m = re.search(COMMA + re.escape(name) + r"\s*$", content)
        if m:
            return content[: m.start()].strip(), name
    for name in names.names:
        m = re.match(r"^\s*" + re.escape(name) + COMMA, content)
        if m:
            return content[m.end() :].strip(), name
    return None
