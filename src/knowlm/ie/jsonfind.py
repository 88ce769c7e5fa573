"""Finding the answer JSON in a model's output, and repairing it.

Models echo the prompt, chat before and after the answer, fence it in Markdown, repeat it, stop
in the middle of it, or write it with Chinese punctuation, single quotes or trailing commas.
:func:`find_json` returns the answer object with a note for every repair it needed.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_ECHO_KEYS = {"instruction", "input", "schema"}


class _MergedKeys(dict):
    """An object in which the model wrote a key twice (its lists were joined)."""


def _merge_pairs(pairs: list[tuple[str, Any]]) -> dict:
    """A key written twice with list values keeps both lists (``json`` would keep only the last):
    a small model that writes ``"employer": [A], "employer": [B]`` answered A and B. Constrained
    decoding cannot write a key twice, so without this a free answer loses items it has."""
    obj: dict = {}
    merged = False
    for key, value in pairs:
        if key in obj and isinstance(obj[key], list) and isinstance(value, list):
            obj[key] = obj[key] + value
            merged = True
        else:
            obj[key] = value
    return _MergedKeys(obj) if merged else obj


_DECODER = json.JSONDecoder(strict=False, object_pairs_hook=_merge_pairs)  # raw control characters tolerated
_FENCE = re.compile(r"```(?:json|JSON)?")


def _is_echo(obj: Any) -> bool:
    return isinstance(obj, dict) and len(_ECHO_KEYS & set(obj)) >= 2


def _close_truncated(s: str) -> str | None:
    """Close a JSON object cut off mid-way: drop the unfinished string (a half span is wrong, not
    partial), the dangling key or comma, and close the brackets. Tries the full text, then cuts
    back to each earlier comma."""
    stack: list[str] = []
    in_str = escape = False
    str_start = 0
    cuts: list[tuple[int, list[str]]] = []  # (position, open brackets) at each comma outside strings
    for i, ch in enumerate(s):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str, str_start = True, i
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack:
                stack.pop()
        elif ch == ",":
            cuts.append((i, list(stack)))
    end = str_start if in_str else len(s)
    for end, open_brackets in [(end, stack)] + list(reversed(cuts)):
        body = s[:end].rstrip().rstrip(",:").rstrip()
        candidate = body + "".join(reversed(open_brackets))
        try:
            obj = json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return candidate
    return None


_ZH_PUNCT = [
    (re.compile(r"[“”„‟＂]"), '"'),
    (re.compile(r'(["\]\}])\s*，'), r"\1,"),
    (re.compile(r"，\s*([\"\[\{])"), r",\1"),
    (re.compile(r'"\s*：'), '":'),
    (re.compile(r"："), ":"),
    (re.compile(r"[｛]"), "{"),
    (re.compile(r"[｝]"), "}"),
    (re.compile(r"[［【]"), "["),
    (re.compile(r"[］】]"), "]"),
]


def _fix_punctuation(s: str) -> str:
    for pattern, repl in _ZH_PUNCT:
        s = pattern.sub(repl, s)
    return s


def _python_literal(s: str) -> Any:
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, (dict, list)) else None


def find_json(output: str) -> tuple[Any, list[str], str | None]:
    """The answer object in ``output``: (object or None, notes, error reason)."""
    obj, notes, error = _find(output)
    if isinstance(obj, _MergedKeys):
        notes.append("merged_duplicate_keys")
    return obj, notes, error


def _find(output: str) -> tuple[Any, list[str], str | None]:
    notes: list[str] = []
    text = _FENCE.sub("", output)
    start = 0
    found: list[tuple[Any, int, int]] = []
    while True:
        pos = min([p for p in (text.find("{", start), text.find("[", start)) if p >= 0], default=-1)
        if pos < 0:
            break
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            if text[pos] == "{" and not found and not re.match(r'\{\s*"(instruction|schema|input)"', text[pos : pos + 40]):
                break  # the answer starts here but is broken: repair it below, do not dig into its insides
            start = pos + 1
            continue
        if _is_echo(obj):
            notes.append("prompt_echo")
        elif isinstance(obj, (dict, list)) and (isinstance(obj, dict) or _list_of_answers(obj)):
            found.append((obj, pos, end))
        start = end
        if len(found) >= 2:
            break
    if found:
        obj, pos, end = found[0]
        if text[:pos].strip() and "prompt_echo" not in notes:
            notes.append("leading_text")
        rest = text[end:].strip()
        if len(found) > 1 and found[1][0] == obj:
            notes.append("repeated_json")
        elif rest:
            notes.append("trailing_text")
        return obj, notes, None
    # Nothing decodes as is: repair from the first brace after any echo.
    brace = _answer_start(text, start)
    if brace < 0:
        fixed = _fix_punctuation(text)
        if "{" in fixed and fixed != text:
            brace = _answer_start(fixed, start)
            text = fixed
            notes.append("repaired_punctuation")
        if brace < 0:
            return None, notes, "no_json"
    tail = text[brace:]
    if text[:brace].strip() and "prompt_echo" not in notes:
        notes.append("leading_text")
    for repair, note in ((lambda s: s, None), (_fix_punctuation, "repaired_punctuation")):
        candidate = repair(tail)
        try:
            obj, end = _DECODER.raw_decode(candidate)
            if note:
                notes.append(note)
            if candidate[end:].strip():
                notes.append("trailing_text")
            return obj, notes, None
        except json.JSONDecodeError:
            pass
        no_commas = re.sub(r",\s*([\]\}])", r"\1", candidate)
        try:
            obj, _ = _DECODER.raw_decode(no_commas)
            notes.append("trailing_comma")
            return obj, notes, None
        except json.JSONDecodeError:
            pass
        literal = _python_literal(_balanced(candidate))
        if literal is not None:
            notes.append("python_literal")
            return literal, notes, None
        closed = _close_truncated(no_commas)
        if closed is not None:
            notes.append("repaired_truncated")
            if note:
                notes.append(note)
            return json.loads(closed, strict=False, object_pairs_hook=_merge_pairs), notes, None
    return None, notes, "truncated"


def _answer_start(text: str, start: int = 0) -> int:
    """Index of the first ``{`` from ``start`` that starts something other than a prompt echo."""
    pos = text.find("{", start)
    while pos >= 0:
        head = text[pos : pos + 40]
        if not re.match(r'\{\s*"(instruction|schema|input)"', head):
            return pos
        nxt = text.find("{", pos + 1)
        pos = nxt
    return -1


def _balanced(s: str) -> str:
    """Prefix of ``s`` up to the bracket that closes the first one (for literal_eval)."""
    depth = 0
    quote = None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote and s[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return s[: i + 1]
    return s


def _list_of_answers(obj: list) -> bool:
    return bool(obj) and all(isinstance(x, dict) for x in obj)
