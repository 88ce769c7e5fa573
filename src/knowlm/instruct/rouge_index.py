"""ROUGE-L diversity without comparing all pairs.

Keeping only items whose ROUGE-L F1 against every kept item is below ``t`` is a similarity join.
ROUGE-L F1 = 2·LCS/(m+n) and LCS never exceeds the multiset overlap of the two token lists, so a
pair can only reach ``t`` when it shares at least ``α = ⌈t·(m+n)/2⌉`` tokens (counting the k-th
occurrence of a word as its own element). Under one fixed global order of elements (rarest
first), two lists sharing ``α`` elements must share one inside their prefixes of length
``len − α + 1`` (prefix filtering, as in AllPairs/PPJoin). So each kept item indexes only its
short prefix of rare tokens; a query looks up its own prefix, drops candidates whose length makes
``t`` unreachable, and computes the exact LCS on the few that remain. Decisions are exact: the
same items are kept as by the all-pairs loop.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from knowlm.instruct.text import lcs_length


def document_frequencies(token_lists: Iterable[Sequence[str]]) -> dict[str, int]:
    """How many token lists contain each token (the global order puts rare tokens first)."""
    df: dict[str, int] = defaultdict(int)
    for tokens in token_lists:
        for token in set(tokens):
            df[token] += 1
    return dict(df)


class RougeIndex:
    """Kept token lists, searchable for ROUGE-L F1 >= ``threshold``.

    ``df``: document frequencies that fix the element order (tokens missing from it count as
    rarest). It is frozen at construction, so adding items never changes the order.
    """

    def __init__(self, threshold: float = 0.7, df: Mapping[str, int] | None = None):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"ROUGE-L threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.df = dict(df or {})
        self.docs: list[Sequence[str]] = []
        self.element_sets: list[frozenset] = []
        self.postings: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.comparisons = 0  # exact LCS computations (for benchmarks and tests)

    def __len__(self) -> int:
        return len(self.docs)

    @staticmethod
    def _elements(tokens: Sequence[str]) -> list[tuple[str, int]]:
        """The k-th occurrence of a word is its own element: set overlap = multiset overlap."""
        seen: dict[str, int] = defaultdict(int)
        elements = []
        for token in tokens:
            seen[token] += 1
            elements.append((token, seen[token]))
        return elements

    def _prefix(self, tokens: Sequence[str], elements: list[tuple[str, int]] | None = None) -> list[tuple[str, int]]:
        """Rarest ``n - ⌈t·n/(2-t)⌉ + 1`` elements: the least overlap any qualifying partner needs."""
        elements = list(elements if elements is not None else self._elements(tokens))
        elements.sort(key=lambda e: (self.df.get(e[0], 0), zlib.crc32(e[0].encode("utf-8")), e[0], e[1]))
        t = self.threshold
        need = max(1, math.ceil(t * len(tokens) / (2.0 - t) - 1e-9))
        return elements[: max(1, len(tokens) - need + 1)]

    def query(self, tokens: Sequence[str]) -> tuple[float, int | None]:
        """(best ROUGE-L F1 found, its item id). Exact whenever it reaches the threshold; below it,
        only the few candidates that were compared count (0.0 when there were none)."""
        m = len(tokens)
        if m == 0 or not self.docs:
            return 0.0, None
        t = self.threshold
        low, high = m * t / (2.0 - t) - 1e-9, m * (2.0 - t) / t + 1e-9
        elements = self._elements(tokens)
        mine = frozenset(elements)
        candidates: set[int] = set()
        for element in self._prefix(tokens, elements):
            candidates.update(self.postings.get(element, ()))
        best, best_id = 0.0, None
        for doc_id in sorted(candidates):
            other = self.docs[doc_id]
            n = len(other)
            if not low <= n <= high:
                continue
            # LCS <= multiset overlap: a C-level set intersection rules out most candidates cheaply
            if len(mine & self.element_sets[doc_id]) < max(t * (m + n) / 2.0 - 1e-9, best * (m + n) / 2.0):
                continue
            self.comparisons += 1
            score = 2.0 * lcs_length(tokens, other) / (m + len(other))
            if score > best:
                best, best_id = score, doc_id
                if score >= 1.0:
                    break
        return best, best_id

    def add(self, tokens: Sequence[str]) -> int:
        doc_id = len(self.docs)
        self.docs.append(tokens)
        elements = self._elements(tokens)
        self.element_sets.append(frozenset(elements))
        if tokens:
            for element in self._prefix(tokens, elements):
                self.postings[element].append(doc_id)
        return doc_id

    def add_if_novel(self, tokens: Sequence[str]) -> tuple[bool, float, int | None]:
        """Keep ``tokens`` when no kept item reaches the threshold: (kept, best score, best id)."""
        score, match = self.query(tokens)
        if score >= self.threshold:
            return False, score, match
        self.add(tokens)
        return True, score, match
