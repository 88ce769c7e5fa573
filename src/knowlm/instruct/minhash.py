"""Batched MinHash signatures and an LSH band index for item-level near-duplicate removal.

``knowlm.data.dedup`` builds one datasketch ``MinHash`` per document, which suits its worker
processes but costs ~1 ms per item in Python. Instruction sets are many short items, so here the
signatures of a whole chunk are computed at once in numpy with datasketch's own "affine32" scheme
(MurmurHash3 finalizer pre-mix, then ``a·h + b`` mod 2^32 with datasketch's permutations), and
the banding uses datasketch's optimal (bands, rows) choice; the bucket tables are plain dicts.
Shingles are hashed with CRC-32 (deterministic across runs and machines, unlike ``hash()``).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Sequence

import numpy as np

from knowlm.instruct.text import tokenize

_PERMUTATIONS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    key = (num_perm, seed)
    if key not in _PERMUTATIONS:
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        _PERMUTATIONS[key] = (a.astype(np.uint32), b.astype(np.uint32))
    return _PERMUTATIONS[key]


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: an avalanching bijection (datasketch's pre-mix)."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


_PAD = np.uint32(0x9E3779B9)  # stands in for missing tokens: a text shorter than a shingle is one shingle
_MIX = np.uint32(0x01000193)


def _token_hashes(tokens: list[str], cache: dict[str, int]) -> list[int]:
    out = []
    for token in tokens:
        h = cache.get(token)
        if h is None:
            h = cache[token] = zlib.crc32(token.encode("utf-8"))
        out.append(h)
    return out


def shingle_hash_arrays(texts: Sequence[str], size: int, cache: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, per-text counts): one uint32 per run of ``size`` consecutive tokens (a CJK character
    or a lower-cased word), computed for all texts at once by folding shifted token-hash arrays."""
    cache = {} if cache is None else cache
    token_lists = [_token_hashes(tokenize(t), cache) for t in texts]
    lengths = np.array([max(len(t), size) for t in token_lists], dtype=np.int64)
    th = np.full(int(lengths.sum()), _PAD, dtype=np.uint32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for start, hashes in zip(starts, token_lists):
        th[start : start + len(hashes)] = hashes
    width = len(th) - size + 1
    h = th[:width].copy()
    with np.errstate(over="ignore"):
        for k in range(1, size):
            h = _fmix32((h * _MIX) ^ th[k : k + width])
    owner = np.repeat(np.arange(len(texts)), lengths)[:width]
    local = np.arange(width) - starts[owner]
    valid = local <= lengths[owner] - size  # runs that stay inside one text
    return h[valid], lengths - size + 1


def signatures(texts: Sequence[str], num_perm: int = 128, shingle: int = 3, seed: int = 1, chunk: int = 1024) -> np.ndarray:
    """uint32[len(texts), num_perm] MinHash signatures of the texts' token shingles."""
    a, b = _permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    cache: dict[str, int] = {}
    with np.errstate(over="ignore"):
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            hv, counts = shingle_hash_arrays(batch, shingle, cache)
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            # permutations x shingles (wraps mod 2^32 by design); reducing along rows is ~10x faster
            permuted = a[:, None] * _fmix32(hv)[None, :] + b[:, None]
            out[start : start + len(batch)] = np.minimum.reduceat(permuted, offsets, axis=1).T
    return out


def band_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows per band) minimising weighted false positives + negatives (datasketch's choice)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, weights[0], weights[1])


class BandIndex:
    """LSH over signatures: items sharing one whole band are candidates; candidates are confirmed
    by the fraction of equal signature values (the Jaccard estimate). Each band is folded into one
    64-bit key up front, so lookups are dict operations on ints."""

    def __init__(self, signatures: np.ndarray, bands: int, rows: int):
        self.sig = signatures
        wide = signatures.astype(np.uint64)
        keys = np.zeros((len(signatures), bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(rows):
                keys = (keys * np.uint64(0x100000001B3)) ^ wide[:, r : bands * rows : rows]
        # band b holds signature columns b, b + bands, ...: interleaved rows are as good as contiguous ones
        self.keys = keys
        self.tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(bands)]

    def best_match(self, item: int) -> tuple[float, int | None]:
        """(estimated Jaccard, id) of the most similar indexed item among the candidates."""
        candidates: set[int] = set()
        for table, key in zip(self.tables, self.keys[item].tolist()):
            found = table.get(key)
            if found:
                candidates.update(found)
        if not candidates:
            return 0.0, None
        ids = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        similarity = (self.sig[ids] == self.sig[item]).mean(axis=1)
        best = int(np.argmax(similarity))
        return float(similarity[best]), int(ids[best])

    def add(self, item: int) -> None:
        for table, key in zip(self.tables, self.keys[item].tolist()):
            table[key].append(item)
