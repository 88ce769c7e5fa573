"""Grounded decoding: every span a constrained answer names is a piece of the input text.

Schema-constrained decoding (:mod:`knowlm.ie.constrained`) fixes the answer's shape; a small
model still spells names it half remembers (``Albert Eyron`` for ``Albert Einstein``), which the
parser then drops as hallucinations. Grounding masks, while the model writes a span value, every
token that would take the value off the text's candidate spans: word n-grams (a CJK character is
one word) of the whole document, so a name written in an earlier sentence may answer for a later
one (``Curie`` -> ``Marie Curie``), as KG2Instruction's canonical names teach. It is opt-in
(``knowlm extract --constrained --ground``): a model that reads well loses F1 to it, because a span
it did not find is forced onto the text instead of being left out.

This module is torch-free: candidate spans, a byte-level prefix index over them, and a tiny JSON
tracker that tells whether the bytes written so far sit inside a value string. The logits
processor that uses them lives in :mod:`knowlm.ie.constrained`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A word: one CJK character, or a run of other letters/digits joined by - ' ’ . (e.g. "D.C", "O'Neil").
_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+(?:[-'’.](?:(?![{_CJK}])[^\W_])+)*")
_BAD = re.compile(r'["\\\x00-\x1f]')  # what the constrained span pattern never admits


def candidate_spans(text: str, max_words: int = 12, max_chars: int = 48) -> frozenset[str]:
    """Every run of 1..``max_words`` consecutive words of ``text`` (as written, spaces and inner
    punctuation kept), at most ``max_chars`` characters long."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    spans: set[str] = set()
    for i, (start, _) in enumerate(words):
        for _, end in words[i : i + max_words]:
            if end - start > max_chars:
                break
            span = text[start:end]
            if not _BAD.search(span):
                spans.add(span)
    return frozenset(spans)


@dataclass
class SpanIndex:
    """Byte prefixes of the candidate spans, and which tokens may continue a partial value.

    ``allowed(written)`` is cached: rows of a batch (and the prompts of one document) keep asking
    for the same few partial values, and computing one scans the vocabulary once.
    """

    spans: frozenset[str]
    full: set[bytes] = field(init=False)
    prefixes: set[bytes] = field(init=False)
    _cache: dict[bytes, list[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.full = {s.encode("utf-8") for s in self.spans}
        self.prefixes = {s[:i] for s in self.full for i in range(len(s) + 1)}

    def allowed(self, written: bytes, vocab: list[bytes]) -> list[int]:
        """Token ids whose bytes keep ``written`` on a candidate span: a longer prefix, or the closing
        quote (and whatever the token holds after it; the grammar judges that) after a whole span."""
        hit = self._cache.get(written)
        if hit is not None:
            return hit
        out = []
        for token_id, piece in enumerate(vocab):
            if not piece:
                continue
            quote = piece.find(b'"')
            if quote < 0:
                if written + piece in self.prefixes:
                    out.append(token_id)
            elif written + piece[:quote] in self.full:
                out.append(token_id)
        self._cache[written] = out
        return out


class ValueTracker:
    """Follows the bytes of a JSON answer and knows when they are inside a value string.

    Enough JSON for extraction answers: objects, arrays, strings with escapes. A string is a value
    when it opens inside an array or after a ``:``; otherwise it is a key.
    """

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.expect_key = False
        self.in_string = False
        self.is_value = False
        self.escaped = False
        self.written = b""

    @property
    def in_value(self) -> bool:
        return self.in_string and self.is_value

    def feed(self, data: bytes) -> None:
        for byte in data:
            char = chr(byte)
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    continue
                self.written += bytes((byte,))
                continue
            if char == "{":
                self.stack.append("{")
                self.expect_key = True
            elif char == "[":
                self.stack.append("[")
            elif char in "}]":
                if self.stack:
                    self.stack.pop()
                self.expect_key = False
            elif char == ":":
                self.expect_key = False
            elif char == ",":
                self.expect_key = bool(self.stack) and self.stack[-1] == "{"
            elif char == '"':
                self.in_string = True
                self.is_value = bool(self.stack) and (self.stack[-1] == "[" or not self.expect_key)
                self.written = b""
