"""Chunk-wide numpy versions of the per-document text analysis done in the workers.

Why: calling regexes and Python loops document by document (quality filters, language
detection, sentence boundaries) cost more than the tokenization itself. Here a whole chunk of
cleaned documents is joined with ``"\\n"`` and turned into one array of code points; a
per-code-point class table then gives every count with a few array passes. Results are exactly
those of the reference functions in :mod:`knowlm.data.clean` and :mod:`knowlm.data.sentences`
(tests compare them on random and edge-case text), with two documented approximations-free
fallbacks: documents containing a character whose lower case is an ASCII letter although it is
not one (U+0130, U+212A) use the reference n-gram check, and repeated n-grams are found by
64-bit hashes (a false match needs a 64-bit collision).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from knowlm.data.sentences import _CLOSERS, _MULTI_DOT, ABBREVIATIONS

SPACE, DIGIT, SYMBOL, CJK_LANG, CJK_WORD, LOWER, CLOSER = 1, 2, 4, 8, 16, 32, 64
_LOWER_TO_ASCII = "\u0130\u212a"  # the only non-ASCII characters whose .lower() holds an ASCII letter
_TABLE: np.ndarray | None = None
_M64 = (1 << 64) - 1
_P_WORD = np.uint64(0x9E3779B97F4A7C15)
_P_GRAM = np.uint64(0xC2B2AE3D27D4EB4F)
_P_DOC = np.uint64(0x165667B19E3779F9)


def _char_flags(s: str) -> np.ndarray:
    """Class flags of every character of ``s`` (slow path; builds the table)."""
    n = len(s)
    flags = np.zeros(n, dtype=np.uint8)

    def mark(pattern: str, bit: int) -> None:
        pos = [m.start() for m in re.finditer(pattern, s)]
        flags[np.asarray(pos, dtype=np.int64)] |= bit

    mark(r"\s", SPACE)  # re's \s is str.isspace
    mark(r"\d", DIGIT)
    mark(r"[^\w\s]|_", SYMBOL)
    mark("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", CJK_LANG)
    mark("[\u3400-\u4dbf\u4e00-\u9fff]", CJK_WORD)
    mark("[" + re.escape(_CLOSERS) + "]", CLOSER)
    lower = np.fromiter((c.islower() for c in s), dtype=bool, count=n)
    flags[lower] |= LOWER
    return flags


def char_table() -> np.ndarray:
    """Flags of the 65,536 BMP code points (built once per process, ~50 ms; forked workers inherit it)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _char_flags("".join(map(chr, range(0x10000))))
    return _TABLE


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

    def count(self, bit: int) -> np.ndarray:
        return _range_count((self.flags & bit) != 0, self.starts, self.ends)

    def ascii_letters(self) -> np.ndarray:
        low = self.cp | 0x20
        return (low >= 0x61) & (low <= 0x7A)

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
        cls = np.zeros(len(self.cp), dtype=np.int8)
        cls[self.ascii_letters()] = 1
        cls[(self.flags & DIGIT) != 0] = 2
        cls[(self.flags & CJK_WORD) != 0] = 3
        start = cls > 0
        start[1:] &= (cls[1:] == 3) | (cls[1:] != cls[:-1])
        n_words = _range_count(start, self.starts, self.ends)
        ratio = np.zeros(len(self.texts))
        check = np.flatnonzero(n_words >= max(min_words, 1))
        if n <= 0 or not len(check):
            return n_words, ratio
        idx = np.flatnonzero(cls > 0)  # word characters, in order
        first = start[idx]  # which of them start a word
        word_of = np.cumsum(first) - 1
        word_pos = idx[first]
        k = idx - word_pos[word_of]
        values = self.cp[idx].astype(np.uint64)
        values[cls[idx] == 1] |= np.uint64(0x20)  # ASCII letters compare case-insensitively
        contrib = _splitmix(values) * _powers(_P_WORD, int(k.max()) + 1)[k]
        hashes = np.add.reduceat(contrib, np.flatnonzero(first)) if len(idx) else contrib
        doc_of_word = np.searchsorted(self.starts, word_pos, side="right") - 1
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
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        same = sk[1:] == sk[:-1]
        dup_sorted = np.zeros(len(sk), dtype=bool)
        dup_sorted[1:] |= same
        dup_sorted[:-1] |= same
        dup_pos = valid[order[dup_sorted]]
        diff = np.bincount(dup_pos, minlength=w + 1) - np.bincount(dup_pos + n, minlength=w + 1)
        covered = np.cumsum(diff[:w]) > 0
        covered_per_doc = np.bincount(doc_of_word[covered], minlength=len(self.texts))
        ratio[check] = covered_per_doc[check] / n_words[check]
        return n_words, ratio

    def boundaries(self, langs: list[str]) -> list[list[int]]:
        """sentences.sentence_offsets for every document (offsets relative to the document)."""
        cp, flags, n_all = self.cp, self.flags, len(self.cp)
        space = (flags & SPACE) != 0
        nonspace_idx = np.append(np.flatnonzero(~space), n_all)
        nonclose_idx = np.append(np.flatnonzero((flags & CLOSER) == 0), n_all)
        space_idx = np.flatnonzero(space)

        def next_nonspace(p):
            return nonspace_idx[np.searchsorted(nonspace_idx, p)]

        def after_closers(p):
            return nonclose_idx[np.searchsorted(nonclose_idx, p)]

        cuts = [next_nonspace(np.flatnonzero(cp == 10) + 1)]  # newlines (the separators fall out below)
        zh_term = np.isin(cp, np.array([0x3002, 0xFF01, 0xFF1F, 0xFF1B, 0x2026], dtype=np.uint32))
        zh_end = np.flatnonzero(zh_term[:-1] & ~zh_term[1:]) + 1
        if len(cp) and zh_term[-1]:
            zh_end = np.append(zh_end, n_all)
        cuts.append(next_nonspace(after_closers(zh_end)))

        en_term = (cp == 0x2E) | (cp == 0x21) | (cp == 0x3F)
        edge = np.diff(np.concatenate([[0], en_term.view(np.int8), [0]]))
        run_start, run_end = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
        if len(run_start):
            doc = np.searchsorted(self.starts, run_start, side="right") - 1
            doc_end = self.ends[doc]
            m_end = after_closers(run_end)
            at_end = m_end >= doc_end
            nxt_flags = flags[np.minimum(m_end, n_all - 1)]
            glued = ~at_end & ((nxt_flags & SPACE) == 0)
            prev_flags = np.where(run_start > self.starts[doc], flags[np.maximum(run_start - 1, 0)], 0)
            zh_doc = np.array([lang == "zh" for lang in langs], dtype=bool)[doc]
            bang = (cp[run_start] == 0x21) | (cp[run_start] == 0x3F)
            glued_cut = ((nxt_flags & CJK_LANG) != 0) | (zh_doc & bang & ((prev_flags & CJK_LANG) != 0))
            cut = next_nonspace(m_end)
            first_flags = flags[np.minimum(cut, n_all - 1)]
            spaced = ~at_end & ~glued & (cut < doc_end) & ((first_flags & LOWER) == 0)
            has_bang = _range_count((cp == 0x21) | (cp == 0x3F), run_start, run_end) > 0
            single_dot = (run_end - run_start == 1) & ~has_bang
            keep = (glued & glued_cut) | (spaced & ~single_dot)
            joined = self.joined
            for i in np.flatnonzero(spaced & single_dot).tolist():
                stop = int(run_start[i])
                j = np.searchsorted(space_idx, stop) - 1
                begin = max(stop - 40, int(space_idx[j]) + 1 if j >= 0 else 0)
                word = joined[begin:stop].lstrip("([{\"'“‘")
                if word.lower() in ABBREVIATIONS or _MULTI_DOT.match(word):
                    continue
                if len(word) == 1 and word.isalpha() and word.isupper():
                    continue
                keep[i] = True
            cuts.append(cut[keep])
        allcuts = np.unique(np.concatenate(cuts))
        doc = np.searchsorted(self.starts, allcuts, side="right") - 1
        inside = (doc >= 0) & (allcuts > self.starts[np.maximum(doc, 0)]) & (allcuts < self.ends[np.maximum(doc, 0)])
        allcuts, doc = allcuts[inside], doc[inside]
        rel = (allcuts - self.starts[doc]).tolist()
        bounds = np.searchsorted(doc, np.arange(len(self.texts) + 1)).tolist()
        return [rel[bounds[d] : bounds[d + 1]] for d in range(len(self.texts))]


def needs_reference_ngrams(text: str) -> bool:
    return any(ch in text for ch in _LOWER_TO_ASCII)
