"""Order-dependent selectors: exact + near-duplicate removal (MinHash LSH) and ROUGE-L diversity.

Both keep the first of a group and compare each item only with items already kept, using an
index instead of all pairs: LSH bands over batched MinHash signatures (``knowlm.instruct.minhash``,
exact keys from the corpus pipeline's ``knowlm.data.dedup``), and prefix filtering for ROUGE-L
(``knowlm.instruct.rouge_index``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from knowlm.instruct.rouge_index import RougeIndex, document_frequencies
from knowlm.instruct.selectors.base import Decision, SelectContext, Selector, need
from knowlm.instruct.selectors.simple import TEXT_FIELDS
from knowlm.instruct.text import record_text, tokenize


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="item", leave=False, disable=None)


@dataclass
class DedupSelector(Selector):
    """Exact duplicates (same text after case folding and whitespace collapsing), then near
    duplicates: estimated Jaccard similarity of word shingles >= ``threshold`` (MinHash LSH
    candidates, confirmed on the signatures). The score is the index of the kept item it repeats."""

    name: ClassVar[str] = "dedup"
    field: str = "all"
    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 3

    def check(self) -> None:
        need(self.field in TEXT_FIELDS, f"dedup: field must be one of {', '.join(TEXT_FIELDS)}")
        need(0.0 < self.threshold < 1.0, "dedup: threshold must be in (0, 1)")
        need(self.num_perm >= 16 and self.shingle >= 1, "dedup: num_perm must be >= 16 and shingle >= 1")

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        from knowlm.data.dedup import exact_key
        from knowlm.instruct.minhash import BandIndex, band_params, signatures

        texts = [record_text(r, self.field) for r in records]
        index = None
        if self.near:
            # The bands are tuned for a lower similarity than asked so that pairs just above the
            # threshold are rarely missed; every candidate is then confirmed on its full signature.
            bands, rows = band_params(max(0.05, self.threshold - 0.15), self.num_perm, (0.3, 0.7))
            index = BandIndex(signatures(texts, self.num_perm, self.shingle), bands, rows)
        seen: dict[int, int] = {}
        out = []
        for i, text in enumerate(_progress(texts, context.progress, "dedup")):
            if self.exact:
                key = exact_key(text)
                if key in seen:
                    out.append(Decision(False, {"duplicate_of": seen[key], "similarity": 1.0}, "exact_duplicate"))
                    continue
                seen[key] = i
            if index is not None:
                similarity, match = index.best_match(i)
                if match is not None and similarity >= self.threshold:
                    out.append(Decision(False, {"duplicate_of": match, "similarity": round(similarity, 4)}, "near_duplicate"))
                    continue
                index.add(i)
            out.append(Decision(True, None))
        return out


@dataclass
class RougeSelector(Selector):
    """Keep an item only if its ROUGE-L F1 to every kept item is below ``threshold`` (0.7, as in
    self-instruct). ``field``: prompt (instruction + input, default: one instruction over different
    inputs is not redundant), instruction, output or all. Exact, without all-pairs comparison."""

    name: ClassVar[str] = "rouge"
    field: str = "prompt"
    threshold: float = 0.7

    def check(self) -> None:
        need(self.field in TEXT_FIELDS, f"rouge: field must be one of {', '.join(TEXT_FIELDS)}")
        need(0.0 < self.threshold <= 1.0, "rouge: threshold must be in (0, 1]")

    def decide(self, records: list[dict], context: SelectContext) -> list[Decision]:
        tokens = [tokenize(record_text(r, self.field)) for r in records]
        index = RougeIndex(self.threshold, document_frequencies(tokens))
        positions: list[int] = []  # index item id -> record position
        out = []
        for i, toks in enumerate(_progress(tokens, context.progress, "rouge")):
            kept, score, match = index.add_if_novel(toks)
            score = round(score, 4)
            if kept:
                positions.append(i)
                out.append(Decision(True, {"rouge_l": score}))
            else:
                out.append(Decision(False, {"rouge_l": score, "similar_to": positions[match]}, "similar_to_kept"))
        return out
