"""Cleaning and heuristic quality filters for pretraining documents.

``clean_text`` normalises Unicode (NFC by default: NFKC would turn Chinese full-width
punctuation into ASCII), removes control and zero-width characters and tidies whitespace.
``quality_reason`` returns why a document should be dropped, or ``None`` to keep it. The
thresholds live in :class:`FilterConfig`; the defaults follow Gopher/RefinedWeb-style rules
loosened for short encyclopedic zh/en text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.utils.jsonl import read_text

# C0/C1 controls except \t and \n, plus zero-width characters and the BOM.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_TRAILING_WS = re.compile(r"[ \t\u3000]+\n")
_UNTIDY = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]|[ \t\u3000]\n|\n\n\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"[A-Za-z]+|[\u3400-\u4dbf\u4e00-\u9fff]|\d+")
_WS_RUN = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")
_SYMBOL = re.compile(r"[^\w\s]|_")  # neither letter, digit, CJK nor whitespace

# The default blocklist: a short, deliberately generic list of spam/adult/illegal-trade terms.
# Replace it with --blocklist FILE (one term per line) for a real deployment.
DEFAULT_BLOCKLIST = (
    "porn",
    "porno",
    "pornography",
    "xxx",
    "hardcore sex",
    "escort service",
    "online casino",
    "casino bonus",
    "viagra",
    "cialis",
    "buy followers",
    "child abuse material",
    "色情",
    "黄色网站",
    "成人视频",
    "裸聊",
    "网络赌博",
    "赌博网站",
    "六合彩",
    "代开发票",
    "办证",
    "枪支出售",
)


@dataclass
class FilterConfig:
    """Thresholds of the quality filters (a document failing any one is dropped and counted).

    min_chars: shorter documents (after cleaning) are dropped ("too_short").
    max_symbol_ratio: share of characters that are neither letters, digits, CJK nor whitespace
        ("too_many_symbols"); Chinese prose has ~0.1 punctuation, code dumps and tables far more.
    max_digit_ratio: share of digit characters ("too_many_digits").
    max_dup_line_ratio: share of non-empty lines repeating an earlier line ("repeated_lines"),
        checked when a document has at least 3 lines.
    ngram_size / max_dup_ngram_ratio: share of words (a Latin word or one CJK character) covered
        by n-grams occurring more than once ("repeated_ngrams"), checked from 2*ngram_size words.
    blocklist: terms (case-insensitive) that drop a document when they occur more than
        max_blocked_terms times in total ("blocklisted"). None = the bundled list.
    normalization: Unicode normal form applied first ("NFC", "NFKC", or "" for none).
    """

    min_chars: int = 20
    max_symbol_ratio: float = 0.3
    max_digit_ratio: float = 0.3
    max_dup_line_ratio: float = 0.3
    ngram_size: int = 5
    max_dup_ngram_ratio: float = 0.5
    blocklist: list[str] | None = None
    max_blocked_terms: int = 0
    normalization: str = "NFC"
    enabled: bool = True

    def terms(self) -> list[str]:
        if self.blocklist is not None:
            return [t.strip().lower() for t in self.blocklist if t.strip()]
        return list(DEFAULT_BLOCKLIST)

    def fingerprint(self) -> str:
        return hashlib.sha256(repr((self.__dict__, self.terms())).encode()).hexdigest()[:16]


def load_blocklist(path: str | Path) -> list[str]:
    """One term per line; ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"blocklist file not found: {path}")
    terms = []
    for line in read_text(path).splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            terms.append(line)
    return terms


def clean_text(text: str, normalization: str = "NFC") -> str:
    """Normalise Unicode, drop control/zero-width characters, tidy line ends and blank lines."""
    if normalization and not unicodedata.is_normalized(normalization, text):
        text = unicodedata.normalize(normalization, text)
    if not _UNTIDY.search(text):  # the common case: nothing to remove or rewrite
        return text.strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_WS.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def dedup_key_text(text: str) -> str:
    """What exact de-duplication compares: case-folded with whitespace collapsed."""
    return " ".join(text.casefold().split())  # str.split() splits on exactly what re's \s matches


class Blocklist:
    """Counts blocklisted terms with one Aho-Corasick pass (pyahocorasick); English terms match
    whole words only, so "class" does not match a blocked "ass"."""

    def __init__(self, terms: list[str]):
        import ahocorasick

        self.terms = terms
        self._automaton = ahocorasick.Automaton()
        for term in terms:
            self._automaton.add_word(term, term)
        if terms:
            self._automaton.make_automaton()

    def count(self, text: str) -> int:
        return len(self.hits(text.lower()))

    def hits(self, lower: str) -> list[int]:
        """End positions of the counted matches in an already lower-cased text."""
        if not self.terms:
            return []
        out = []
        for end, term in self._automaton.iter(lower):
            start = end - len(term) + 1
            if term[0].isascii() and term[0].isalnum():
                if (start > 0 and lower[start - 1].isascii() and lower[start - 1].isalnum()) or (
                    end + 1 < len(lower) and lower[end + 1].isascii() and lower[end + 1].isalnum()
                ):
                    continue
            out.append(end)
        return out


def _dup_ngram_ratio(words: list[str], n: int) -> float:
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0
    covered = bytearray(len(words))
    ones = b"\x01" * n
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = ones
    return covered.count(1) / len(words)


def quality_reason(text: str, config: FilterConfig, blocklist: Blocklist | None = None) -> str | None:
    """Why ``text`` (already cleaned) fails the filters, or None when it passes."""
    if len(text) < config.min_chars:
        return "too_short"
    n = len(text)
    digits = len(_DIGIT.findall(text))
    if digits / n > config.max_digit_ratio:
        return "too_many_digits"
    symbols = len(_SYMBOL.findall(text))
    if symbols / n > config.max_symbol_ratio:
        return "too_many_symbols"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= 3:
        dup = len(lines) - len(set(lines))
        if dup / len(lines) > config.max_dup_line_ratio:
            return "repeated_lines"
    words = _WORD.findall(text.lower())
    if config.ngram_size > 0 and len(words) >= 2 * config.ngram_size:
        if _dup_ngram_ratio(words, config.ngram_size) > config.max_dup_ngram_ratio:
            return "repeated_ngrams"
    if blocklist is not None and blocklist.count(text) > config.max_blocked_terms:
        return "blocklisted"
    return None
