"""Pretraining examples read through the memory-mapped indexed dataset (never loaded into RAM).

One sequence of the ``.bin/.idx`` dataset is one example; labels are the input ids (the model
shifts them). An evaluation split holds out whole documents, so no document is both trained
and evaluated on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.train.config import parse_weighted


class IndexedExamples:
    """A subset (sequence index range) of one indexed dataset, truncated to ``seq_len``."""

    def __init__(self, dataset, indices: np.ndarray, seq_len: int, name: str = ""):
        self.dataset = dataset
        self.indices = indices
        self.seq_len = seq_len
        self.name = name
        self._sizes = np.asarray(dataset.sizes)

    def __len__(self) -> int:
        return len(self.indices)

    def length(self, i: int) -> int:
        return min(int(self._sizes[self.indices[i]]), self.seq_len)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(self.dataset[int(self.indices[i])][: self.seq_len], dtype=np.int64)
        return ids, ids

    def num_tokens(self) -> int:
        return int(np.minimum(self._sizes[self.indices], self.seq_len).sum())


def open_indexed(prefix: str):
    """Open ``PREFIX.bin/.idx`` with a clear error when it is missing or unreadable."""
    from knowlm.data.indexed import IndexedDataset

    base = Path(prefix)
    if base.suffix in (".bin", ".idx"):
        base = base.with_suffix("")
    if not Path(f"{base}.bin").is_file() or not Path(f"{base}.idx").is_file():
        raise KnowlmError(f"indexed dataset not found: {base}.bin/.idx (build it with `knowlm data prepare`)")
    try:
        return IndexedDataset(str(base))
    except KnowlmError:
        raise
    except Exception as exc:  # a corrupt header or truncated file
        raise KnowlmError(f"cannot read indexed dataset {base}: {exc}") from None


def _split_by_documents(dataset, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) sequence indices: the last ``fraction`` of documents (at least one) is held out."""
    n = len(dataset)
    docs = np.asarray(dataset.document_indices, dtype=np.int64)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    num_docs = len(docs) - 1
    if num_docs < 2:
        cut = max(1, n - max(1, int(round(n * fraction))))
    else:
        held = min(num_docs - 1, max(1, int(round(num_docs * fraction))))
        cut = int(docs[num_docs - held])
    return np.arange(cut), np.arange(cut, n)


def load_pretrain_sets(data: list[str], seq_len: int, eval_data: list[str] | None = None, eval_split: float = 0.0):
    """-> (train sets, train weights or None, eval sets)."""
    pairs = parse_weighted(data)
    weights = None if pairs[0][0] is None else [w for w, _ in pairs]
    train, evals = [], []
    for _, prefix in pairs:
        dataset = open_indexed(prefix)
        if len(dataset) == 0:
            raise KnowlmError(f"indexed dataset {prefix} holds no sequences")
        train_idx, eval_idx = _split_by_documents(dataset, 0.0 if eval_data else eval_split)
        train.append(IndexedExamples(dataset, train_idx, seq_len, prefix))
        if len(eval_idx):
            evals.append(IndexedExamples(dataset, eval_idx, seq_len, prefix))
    for _, prefix in parse_weighted(eval_data, "--eval-data") if eval_data else []:
        dataset = open_indexed(prefix)
        evals.append(IndexedExamples(dataset, np.arange(len(dataset)), seq_len, prefix))
    return train, weights, evals
