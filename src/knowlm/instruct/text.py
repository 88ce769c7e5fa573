"""Tokens, ROUGE-L and record text for instruction data.

Chinese has no spaces, so a CJK character is one token; everything else is split into
lower-cased words (letters and digits), punctuation dropped — the same units ROUGE-L, MTLD,
length bounds and de-duplication all count in, for zh, en and mixed text alike.
"""

from __future__ import annotations

import re
from typing import Sequence

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def tokenize(text: str) -> list[str]:
    """``"Hello, 浙江大学!"`` -> ``["hello", "浙", "江", "大", "学"]``."""
    return _TOKEN.findall(text.lower()) if text else []


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(a)·len(b)/64).

    Bit i of ``v`` is 0 once a[i] is matched; each symbol of ``b`` updates all of them at once.
    """
    if not a or not b:
        return 0
    if len(a) < len(b):
        a, b = b, a  # the longer one goes into the bit vector: fewer loop iterations
    masks: dict = {}
    for i, symbol in enumerate(a):
        masks[symbol] = masks.get(symbol, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for symbol in b:
        u = v & masks.get(symbol, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def lcs_length_dp(a: Sequence, b: Sequence) -> int:
    """The textbook dynamic programme (reference for tests)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: Sequence[str] | str, b: Sequence[str] | str) -> float:
    """ROUGE-L F1 between two texts or token lists: 2·LCS / (len(a) + len(b))."""
    ta = tokenize(a) if isinstance(a, str) else a
    tb = tokenize(b) if isinstance(b, str) else b
    if not ta or not tb:
        return 0.0
    return 2.0 * lcs_length(ta, tb) / (len(ta) + len(tb))


FIELDS = ("instruction", "input", "output")


def record_text(record: dict, field: str = "all") -> str:
    """The text a selector looks at: one field, or ``all`` (instruction, input and output joined)."""
    if field == "all":
        return "\n".join(str(record.get(name) or "") for name in FIELDS if record.get(name))
    if field == "prompt":
        return "\n".join(str(record.get(name) or "") for name in ("instruction", "input") if record.get(name))
    value = record.get(field)
    return value if isinstance(value, str) else ("" if value is None else str(value))


_LATIN_WORD = re.compile(r"[A-Za-z]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_OTHER_WORD = re.compile(f"[^\\W\\d_A-Za-z{_CJK}]+")


def language_of(text: str) -> str:
    """"zh" or "en" as :func:`knowlm.data.sentences.detect_lang` decides, "other" when words in other
    scripts (Cyrillic, Arabic, kana, Hangul, accented-only...) outnumber both, "none" without letters."""
    from knowlm.data.sentences import detect_lang

    cjk, latin, other = len(_CJK_CHAR.findall(text)), len(_LATIN_WORD.findall(text)), len(_OTHER_WORD.findall(text))
    if not (cjk or latin or other):
        return "none"
    if other > cjk and other > latin:
        return "other"
    return detect_lang(text)
