"""Document de-duplication: exact (hash of normalised text) or near-duplicate (MinHash LSH).

Keys are computed in the tokenization workers (``exact_key``, ``minhash_signature``); the
parent process feeds them, in corpus order, to one :class:`Deduplicator`, so the first copy of
a document is kept whatever the number of workers. The keys of kept documents are saved with
each finished chunk so that a resumed run rebuilds the same state without re-reading text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from knowlm.data.clean import dedup_key_text
from knowlm.errors import KnowlmError

MODES = ("exact", "minhash", "none")
SCHEME = "affine32"  # datasketch 2.x default; signatures are uint32 values stored as uint64
_SHINGLE_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_PERMUTATIONS: dict[tuple[int, int], object] = {}


@dataclass
class DedupConfig:
    """mode: exact | minhash | none. threshold: Jaccard similarity above which two documents
    are near-duplicates (minhash). num_perm: MinHash permutations. shingle: words per shingle
    (a Latin word or one CJK character counts as a word)."""

    mode: str = "exact"
    threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise KnowlmError(f"unknown --dedup {self.mode!r}; choose one of: {', '.join(MODES)}")
        if not 0.0 < self.threshold < 1.0:
            raise KnowlmError(f"dedup threshold must be between 0 and 1, got {self.threshold}")


def exact_key(text: str) -> int:
    """64-bit hash of the case-folded, whitespace-collapsed text."""
    digest = hashlib.blake2b(dedup_key_text(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _shingles(text: str, size: int) -> set[bytes]:
    words = _SHINGLE_WORD.findall(dedup_key_text(text))
    if len(words) <= size:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + size]).encode("utf-8") for i in range(len(words) - size + 1)}


def minhash_signature(text: str, num_perm: int = 128, shingle: int = 3, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint64[num_perm]) of the document's word shingles."""
    from datasketch import MinHash

    key = (num_perm, seed)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS[key] = MinHash(num_perm=num_perm, seed=seed).permutations
    mh = MinHash(num_perm=num_perm, seed=seed, permutations=_PERMUTATIONS[key], scheme=SCHEME)
    mh.update_batch(list(_shingles(text, shingle)))
    return np.asarray(mh.hashvalues, dtype=np.uint64)


class Deduplicator:
    """Sequential duplicate decisions. ``is_duplicate(key)`` remembers ``key`` when it is new."""

    def __init__(self, config: DedupConfig):
        self.config = config
        self._seen: set[int] = set()
        self._lsh = None
        self._next = 0
        if config.mode == "minhash":
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)

    def is_duplicate(self, key) -> bool:
        mode = self.config.mode
        if mode == "none":
            return False
        if mode == "exact":
            if key in self._seen:
                return True
            self._seen.add(key)
            return False
        from datasketch import LeanMinHash

        mh = LeanMinHash(seed=1, hashvalues=key, scheme=SCHEME)
        if self._lsh.query(mh):
            return True
        self._lsh.insert(self._next, mh, check_duplication=False)
        self._next += 1
        return False

    def add(self, key) -> None:
        """Remember a kept document's key (rebuilding state from finished chunks)."""
        if self.config.mode == "exact":
            self._seen.add(int(key))
        elif self.config.mode == "minhash":
            from datasketch import LeanMinHash

            self._lsh.insert(self._next, LeanMinHash(seed=1, hashvalues=key, scheme=SCHEME), check_duplication=False)
            self._next += 1
