"""Chunk-wide numpy versions of the per-document text analysis done in the workers.

Why: calling regexes and Python loops document by document (quality filters, language
detection, sentence boundaries) cost more than the tokenization itself. Here a whole chunk of
cleaned documents is joined with ``"\\n"`` and turned into one array of code points; a
per-code-point class table then gives every count with a few array passes. Results are exactly
those of the reference functions in :mod:`knowlm.data.clean` and :mod:`knowlm.data.sentences`
(tests compare them on random and edge-case text). Documents containing a character whose lower
case is an ASCII letter although it is not one (U+0130, U+212A) use the reference n-gram check;
repeated n-grams are found by 64-bit hashes (a false match needs a 64-bit collision).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from knowlm.data.clean import _CONTROL
from knowlm.data.sentences import _CLOSERS, _MULTI_DOT, ABBREVIATIONS

SPACE, DIGIT, SYMBOL, CJK_LANG, CJK_WORD, LOWER, CLOSER = 1, 2, 4, 8, 16, 32, 64
LETTER, ZH_TERM, EN_TERM, BANG = 128, 256, 512, 1024  # [A-Za-z], 。！？；…, .!?, !?
CONTROL, LINE_END_SPACE = 2048, 4096  # what clean_text removes; what it removes before a newline
WORD = LETTER | DIGIT | CJK_WORD  # what clean._WORD matches (classes are disjoint)
_LOWER_TO_ASCII = "\u0130\u212a"  # the only non-ASCII characters whose .lower() holds an ASCII letter
_TABLE: np.ndarray | None = None
_RANDOM: np.ndarray | None = None
_OPENER_CHARS = "([{\"'“‘"
_OPENERS = np.array([ord(c) for c in _OPENER_CHARS], dtype=np.uint32)
_MAX_ABBREVIATION = max(len(a) for a in ABBREVIATIONS)
_P_WORD = np.uint64(0x9E3779B97F4A7C15)
_P_GRAM = np.uint64(0xC2B2AE3D27D4EB4F)
_P_DOC = np.uint64(0x165667B19E3779F9)


def _char_flags(s: str) -> np.ndarray:
    """Class flags of every character of ``s`` (slow path; builds the table)."""
    n = len(s)
    flags = np.zeros(n, dtype=np.uint16)

    def mark(pattern: str, bit: int) -> None:
        pos = [m.start() for m in re.finditer(pattern, s)]
        flags[np.asarray(pos, dtype=np.int64)] |= bit

    mark(r"\s", SPACE)  # re's \s is str.isspace
    mark(r"\d", DIGIT)
    mark(r"[^\w\s]|_", SYMBOL)
    mark("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", CJK_LANG)
    mark("[\u3400-\u4dbf\u4e00-\u9fff]", CJK_WORD)
    mark("[" + re.escape(_CLOSERS) + "]", CLOSER)
    mark("[A-Za-z]", LETTER)
    mark("[。！？；…]", ZH_TERM)
    mark(r"[.!?]", EN_TERM)
    mark(r"[!?]", BANG)
    mark(_CONTROL.pattern, CONTROL)
    mark("[ \t\u3000]", LINE_END_SPACE)
    lower = np.fromiter((c.islower() for c in s), dtype=bool, count=n)
    flags[lower] |= LOWER
    return flags


def char_table() -> np.ndarray:
    """Flags of the 65,536 BMP code points (built once per process, ~50 ms; forked workers inherit it)."""
    global _TABLE, _RANDOM
    if _TABLE is None:
        _TABLE = _char_flags("".join(map(chr, range(0x10000))))
        _RANDOM = _splitmix(np.arange(0x10000, dtype=np.uint64))
        upper = np.arange(ord("A"), ord("Z") + 1)
        _RANDOM[upper] = _RANDOM[upper | 0x20]  # ASCII letters hash case-insensitively (text.lower())
    return _TABLE


def _char_hash(cp: np.ndarray) -> np.ndarray:
    """A random 64-bit value per code point (upper- and lower-case ASCII letters equal)."""
    char_table()
    out = _RANDOM[np.minimum(cp, 0xFFFF)]
    astral = cp > 0xFFFF
    if astral.any():
        out[astral] = _splitmix(cp[astral])
    return out


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def flags_of(cp: np.ndarray) -> np.ndarray:
    flags = char_table()[np.minimum(cp, 0xFFFF)]
    astral = np.flatnonzero(cp > 0xFFFF)
    if len(astral):
        values = np.unique(cp[astral])
        fl = _char_flags("".join(map(chr, values.tolist())))
        flags[astral] = fl[np.searchsorted(values, cp[astral])]
    return flags


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(max(n, 1), base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)  # wraps modulo 2**64, which is what a hash wants


def _range_count(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    csum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    return csum[ends] - csum[starts]


def _run_ends(idx: np.ndarray) -> np.ndarray:
    """For sorted positions ``idx``: one past the end of the run of consecutive positions each is in."""
    if not len(idx):
        return idx
    last = np.append(np.flatnonzero(np.diff(idx) != 1), len(idx) - 1)
    return np.repeat(idx[last] + 1, np.diff(last, prepend=-1))


def _skip(idx: np.ndarray, ends: np.ndarray, p: np.ndarray) -> np.ndarray:
    """First position >= p that is not in ``idx`` (whitespace or closer runs are short)."""
    if not len(idx):
        return p
    r = np.minimum(np.searchsorted(idx, p), len(idx) - 1)
    return np.where(idx[r] == p, ends[r], p)


@dataclass
class ChunkText:
    """One chunk of documents as arrays. ``starts``/``ends``: each document's span in ``joined``."""

    texts: list[str]
    joined: str
    cp: np.ndarray
    flags: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def build(cls, texts: list[str]) -> "ChunkText":
        joined = "\n".join(texts)
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        starts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64) if len(texts) else lens
        cp = code_points(joined)
        return cls(texts, joined, cp, flags_of(cp), starts, starts + lens)

    def untidy(self) -> np.ndarray:
        """Documents clean_text would change beyond strip(): control characters, spaces before a
        newline, three newlines in a row (Unicode normalisation is checked separately)."""
        if not self.texts:
            return np.zeros(0, dtype=bool)
        bad = (self.flags & CONTROL) != 0
        nl = self.cp == 10
        bad[:-1] |= ((self.flags[:-1] & LINE_END_SPACE) != 0) & nl[1:]
        bad[:-2] |= nl[:-2] & nl[1:-1] & nl[2:]
        return _range_count(bad, self.starts, self.ends) > 0

    def blocked(self, blocklist) -> np.ndarray:
        """Blocklist.count for every document, with one automaton pass over the whole chunk
        (terms hold no newline, and a newline is no ASCII letter: a match never crosses documents)."""
        lower = self.joined.lower()
        if len(lower) != len(self.joined):  # a few characters lower-case to two: go document by document
            return np.array([blocklist.count(t) for t in self.texts], dtype=np.int64)
        ends = np.asarray(blocklist.hits(lower), dtype=np.int64)
        return np.diff(np.searchsorted(ends, np.stack([self.starts, self.ends]).T.ravel()))[::2]

    def count(self, bit: int) -> np.ndarray:
        """Characters of class ``bit`` per document (the separators belong to no counted class)."""
        if bit & SPACE or not len(self.starts) or self.starts[-1] >= len(self.cp):
            return _range_count((self.flags & bit) != 0, self.starts, self.ends)
        return np.add.reduceat((self.flags & bit) != 0, self.starts, dtype=np.int64)

    def ascii_letters(self) -> np.ndarray:
        return (self.flags & LETTER) != 0

    def latin_words(self) -> np.ndarray:
        """Number of ``[A-Za-z]+`` runs per document."""
        letter = self.ascii_letters()
        start = letter.copy()
        start[1:] &= ~letter[:-1]
        return _range_count(start, self.starts, self.ends)

    def langs(self) -> list[str]:
        """detect_lang for every document."""
        cjk = self.count(CJK_LANG)
        zh = (cjk > 0) & (cjk >= self.latin_words())
        return ["zh" if z else "en" for z in zh.tolist()]

    def dup_ngram_ratio(self, n: int, min_words: int) -> tuple[np.ndarray, np.ndarray]:
        """(words per document, share of words in repeated ``n``-grams) as clean.quality_reason
        computes them with ``_WORD.findall(text.lower())``; the ratio is 0 for documents with fewer
        than ``min_words`` words."""
        wc = self.flags & WORD
        start = wc != 0
        start[1:] &= ((wc[1:] & CJK_WORD) != 0) | (wc[1:] != wc[:-1])
        word_pos = np.flatnonzero(start)
        n_words = np.diff(np.searchsorted(word_pos, np.stack([self.starts, self.ends]).T.ravel()))[::2]
        ratio = np.zeros(len(self.texts))
        check = np.flatnonzero(n_words >= max(min_words, 1))
        if n <= 0 or not len(check):
            return n_words, ratio
        idx = np.flatnonzero(wc)  # word characters, in order
        first = start[idx]  # which of them start a word
        first_at = np.flatnonzero(first)
        k = np.arange(len(idx)) - np.repeat(first_at, np.diff(np.append(first_at, len(idx))))
        contrib = _char_hash(self.cp[idx]) * _powers(_P_WORD, int(k.max()) + 1)[k]
        hashes = np.add.reduceat(contrib, first_at)
        doc_of_word = np.repeat(np.arange(len(self.texts)), n_words)
        w = len(hashes)
        if w < n:
            return n_words, ratio
        grams = np.zeros(w - n + 1, dtype=np.uint64)
        for t, p in enumerate(_powers(_P_GRAM, n)):
            grams += hashes[t : w - n + 1 + t] * p
        gdoc = doc_of_word[: w - n + 1]
        checked = np.zeros(len(self.texts), dtype=bool)
        checked[check] = True
        valid = np.flatnonzero((gdoc == doc_of_word[n - 1 :]) & checked[gdoc])
        keys = grams[valid] + gdoc[valid].astype(np.uint64) * _P_DOC
        sk = np.sort(keys)
        repeated = np.unique(sk[1:][sk[1:] == sk[:-1]])
        dup_pos = valid[np.isin(keys, repeated)] if len(repeated) else valid[:0]
        diff = np.bincount(dup_pos, minlength=w + 1) - np.bincount(dup_pos + n, minlength=w + 1)
        covered = np.cumsum(diff[:w]) > 0
        covered_per_doc = np.bincount(doc_of_word[covered], minlength=len(self.texts))
        ratio[check] = covered_per_doc[check] / n_words[check]
        return n_words, ratio

    def boundaries(self, langs: list[str]) -> list[list[int]]:
        """sentences.sentence_offsets for every document (offsets relative to the document)."""
        if not self.texts:
            return []
        cp, flags, n_all = self.cp, self.flags, len(self.cp)
        space_idx = np.flatnonzero(flags & SPACE)
        space_end = _run_ends(space_idx)
        close_idx = np.flatnonzero(flags & CLOSER)
        close_end = _run_ends(close_idx)

        def next_nonspace(p):
            return _skip(space_idx, space_end, p)

        def after_closers(p):
            return _skip(close_idx, close_end, p)

        def doc_of(p):
            return np.searchsorted(self.starts, p, side="right") - 1

        cuts, docs = [], []

        def add(candidate_pos, cut):
            doc = doc_of(candidate_pos)
            cuts.append(np.minimum(cut, self.ends[doc]))  # never skip past the document's end
            docs.append(doc)

        newline = np.flatnonzero(cp == 10)
        newline = newline[~np.isin(newline, self.ends)]  # not the separators
        add(newline, next_nonspace(newline + 1))
        zh_term = (flags & ZH_TERM) != 0
        zh_end = np.flatnonzero(zh_term[:-1] & ~zh_term[1:]) + 1
        if len(cp) and zh_term[-1]:
            zh_end = np.append(zh_end, n_all)
        add(zh_end - 1, next_nonspace(after_closers(zh_end)))

        en_idx = np.flatnonzero(flags & EN_TERM)
        run_first = np.flatnonzero(np.diff(en_idx, prepend=-2) != 1)  # runs of consecutive .!?
        run_start = en_idx[run_first]
        if len(run_start):
            run_end = en_idx[np.append(run_first[1:], len(en_idx)) - 1] + 1
            doc = doc_of(run_start)
            doc_end = self.ends[doc]
            m_end = after_closers(run_end)
            at_end = m_end >= doc_end
            nxt_flags = flags[np.minimum(m_end, n_all - 1)]
            glued = ~at_end & ((nxt_flags & SPACE) == 0)
            prev_flags = np.where(run_start > self.starts[doc], flags[np.maximum(run_start - 1, 0)], 0)
            zh_doc = np.array([lang == "zh" for lang in langs], dtype=bool)[doc]
            bang = (flags[run_start] & BANG) != 0
            glued_cut = ((nxt_flags & CJK_LANG) != 0) | (zh_doc & bang & ((prev_flags & CJK_LANG) != 0))
            cut = next_nonspace(m_end)
            first_flags = flags[np.minimum(cut, n_all - 1)]
            spaced = ~at_end & ~glued & (cut < doc_end) & ((first_flags & LOWER) == 0)
            has_bang = np.add.reduceat((flags[en_idx] & BANG) != 0, run_first, dtype=np.int64) > 0
            single_dot = (run_end - run_start == 1) & ~has_bang
            keep = (glued & glued_cut) | (spaced & ~single_dot)
            # A lone "." before a capitalised word: an abbreviation or an initial does not end a sentence.
            ask = np.flatnonzero(spaced & single_dot)
            stop = run_start[ask]
            j = np.searchsorted(space_idx, stop) - 1
            begin = np.maximum(stop - 40, np.where(j >= 0, space_idx[np.maximum(j, 0)] + 1, 0))
            # Only short words, words with a dot or an opening bracket/quote can be abbreviations.
            dot_idx = en_idx[cp[en_idx] == 0x2E]
            dots = np.searchsorted(dot_idx, stop) - np.searchsorted(dot_idx, begin)
            opener = np.isin(cp[np.minimum(begin, n_all - 1)], _OPENERS)
            maybe = (stop - begin <= _MAX_ABBREVIATION) | (dots > 0) | opener
            keep[ask[~maybe]] = True
            joined = self.joined
            for i, b0, s0 in zip(ask[maybe].tolist(), begin[maybe].tolist(), stop[maybe].tolist()):
                word = joined[b0:s0].lstrip(_OPENER_CHARS)
                if word.lower() in ABBREVIATIONS or _MULTI_DOT.match(word):
                    continue
                if len(word) == 1 and word.isalpha() and word.isupper():
                    continue
                keep[i] = True
            add(run_start[keep], cut[keep])
        cut, doc = np.concatenate(cuts), np.concatenate(docs)
        rel = cut - self.starts[doc]
        inside = (rel > 0) & (cut < self.ends[doc])
        key = np.unique(doc[inside] * (n_all + 1) + rel[inside])  # sorted by document, then offset
        doc, rel = key // (n_all + 1), (key % (n_all + 1)).tolist()
        bounds = np.searchsorted(doc, np.arange(len(self.texts) + 1)).tolist()
        return [rel[bounds[d] : bounds[d + 1]] for d in range(len(self.texts))]


def needs_reference_ngrams(text: str) -> bool:
    return any(ch in text for ch in _LOWER_TO_ASCII)


def quality_reasons(chunk: ChunkText, config, blocklist=None) -> list[str | None]:
    """clean.quality_reason for every document of the chunk (same reasons, same order of checks)."""
    from knowlm.data.clean import _WORD, _dup_ngram_ratio

    lens = chunk.ends - chunk.starts
    digit_ratio = chunk.count(DIGIT) / np.maximum(lens, 1)
    symbol_ratio = chunk.count(SYMBOL) / np.maximum(lens, 1)
    n = config.ngram_size
    n_words, ngram_ratio = chunk.dup_ngram_ratio(n, 2 * n) if n > 0 else (None, np.zeros(len(lens)))
    short = (lens < config.min_chars).tolist()
    digits = (digit_ratio > config.max_digit_ratio).tolist()
    symbols = (symbol_ratio > config.max_symbol_ratio).tolist()
    ngrams = (ngram_ratio > config.max_dup_ngram_ratio).tolist()
    blocked = chunk.blocked(blocklist).tolist() if blocklist is not None else None
    reasons: list[str | None] = []
    for i, text in enumerate(chunk.texts):
        if short[i]:
            reasons.append("too_short")
            continue
        if digits[i]:
            reasons.append("too_many_digits")
            continue
        if symbols[i]:
            reasons.append("too_many_symbols")
            continue
        if text.count("\n") >= 2:  # at least 3 lines possible: the repeated-lines check
            lines = [line.strip() for line in text.split("\n") if line.strip()]
            if len(lines) >= 3 and (len(lines) - len(set(lines))) / len(lines) > config.max_dup_line_ratio:
                reasons.append("repeated_lines")
                continue
        if needs_reference_ngrams(text):
            words = _WORD.findall(text.lower())
            bad = n > 0 and len(words) >= 2 * n and _dup_ngram_ratio(words, n) > config.max_dup_ngram_ratio
        else:
            bad = ngrams[i]
        if bad:
            reasons.append("repeated_ngrams")
            continue
        if blocked is not None and blocked[i] > config.max_blocked_terms:
            reasons.append("blocklisted")
            continue
        reasons.append(None)
    return reasons
