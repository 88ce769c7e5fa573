"""Sentence splitting for Chinese, English and mixed text that never loses a character.

``"".join(split_sentences(text)) == text`` always holds: whitespace after a sentence belongs to
that sentence. Boundaries are newlines, Chinese terminators (。！？；… with their closing quotes
and brackets) and English ``.!?`` followed by whitespace, except after abbreviations ("Dr.",
"U.S.", "e.g."), initials ("J. K. Rowling") or before a lowercase word.
"""

from __future__ import annotations

import re

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_LATIN_WORD_RE = re.compile(r"[A-Za-z]+")
_CLOSERS = "\"'”’」』）》】〕〉)]}"
_CANDIDATE = re.compile(r"(\n)|([。！？；…]+|[.!?]+)([" + re.escape(_CLOSERS) + r"]*)")
_NEXT_VISIBLE = re.compile(r"\s*(\S)")
_ZH_TERMINATORS = frozenset("。！？；…")

# Lower-cased, without the final dot. Multi-dot forms ("u.s", "e.g") are caught by a pattern.
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft rev gen col lt sgt capt cmdr gov sen rep pres hon
    vs etc al cf inc ltd co corp bros dept univ assn est approx no nos vol vols fig figs eq eqs
    pp ch sec art ed eds op jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri
    sat sun ave blvd rd""".split()
)
_MULTI_DOT = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")


def detect_lang(text: str) -> str:
    """"zh" when CJK characters outnumber Latin words, else "en"."""
    cjk = len(_CJK_RE.findall(text))
    if not cjk:
        return "en"
    return "zh" if cjk >= len(_LATIN_WORD_RE.findall(text)) else "en"


def _is_cjk(ch: str) -> bool:
    return bool(_CJK_RE.match(ch))


def _english_boundary(text: str, m: re.Match, lang: str) -> bool:
    """Decide whether ``.!?`` (plus closers) at ``m`` ends a sentence."""
    term, end = m.group(2), m.end()
    nxt = text[end] if end < len(text) else ""
    prev = text[m.start() - 1] if m.start() else ""
    if nxt and not nxt.isspace():
        # "6.3", "U.S.A", "a.b": no boundary, except right before Chinese text ("Hi.你好")
        # or after Chinese text in Chinese documents ("好!然后").
        if _is_cjk(nxt) or (lang == "zh" and term[0] in "!?" and _is_cjk(prev)):
            return True
        return False
    if not nxt:
        return True
    nxt_m = _NEXT_VISIBLE.match(text, end)
    first = nxt_m.group(1) if nxt_m else ""
    if first and first.islower():
        return False  # "etc. and so on", '"Really?" she asked'
    if "!" in term or "?" in term:
        return True
    if term == ".":
        stop = start = m.start()
        while start > 0 and stop - start < 40 and not text[start - 1].isspace():
            start -= 1
        word = text[start:stop].lstrip("([{\"'“‘")
        if word.lower() in ABBREVIATIONS or _MULTI_DOT.match(word):
            return False
        if len(word) == 1 and word.isalpha() and word.isupper():
            return False  # an initial: "J. K. Rowling"
    return True


def _boundaries(text: str, lang: str) -> list[int]:
    cuts: set[int] = set()
    for m in _CANDIDATE.finditer(text):
        if m.group(1):  # newline
            cuts.add(m.end())
        elif m.group(2)[0] in _ZH_TERMINATORS:
            cuts.add(m.end())
        elif _english_boundary(text, m, lang):
            cuts.add(m.end())
    n = len(text)
    out = set()
    for cut in cuts:
        while cut < n and text[cut].isspace():
            cut += 1
        if 0 < cut < n:
            out.add(cut)
    return sorted(out)


def split_sentences(text: str, lang: str = "auto") -> list[str]:
    """Split ``text`` into sentences; joining the result gives back ``text`` exactly.

    lang: "auto" (detect per call), "zh" or "en". Chinese terminators split in every mode;
    "zh" additionally splits at ASCII ``!?`` directly after a Chinese character.
    """
    if not text:
        return []
    if lang == "auto":
        lang = detect_lang(text)
    elif lang not in ("zh", "en"):
        raise ValueError(f"lang must be auto, zh or en, got {lang!r}")
    pieces, start = [], 0
    for cut in _boundaries(text, lang):
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def sentence_offsets(text: str, lang: str = "auto") -> list[int]:
    """Start offsets of every sentence after the first (what tokenization needs)."""
    if not text:
        return []
    if lang == "auto":
        lang = detect_lang(text)
    return _boundaries(text, lang)
