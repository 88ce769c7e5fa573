"""Pretraining examples read through the memory-mapped indexed dataset (never loaded into RAM).

A stored sequence of at most ``seq_len`` tokens is one example; labels are the input ids (the
model shifts them). A longer sequence continues into further examples, as Megatron's sample
index does: each piece starts at the last token of the previous one, so every token after the
first is predicted exactly once and nothing is dropped (``long_sequences="truncate"`` cuts
instead, and counts what it cut). An evaluation split holds out whole documents, so no
document is both trained and evaluated on.

The ``PREFIX.json`` sidecar written by ``knowlm data prepare`` says which tokenizer made the
ids and the sequence length it packed to: a different tokenizer is refused, and ``--seq-len``
defaults to the sidecar's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knowlm.errors import KnowlmError
from knowlm.train.config import DEFAULT_SEQ_LEN, parse_weighted


class IndexedExamples:
    """A subset (sequence index range) of one indexed dataset, cut into examples of <= ``seq_len`` tokens."""

    def __init__(self, dataset, indices: np.ndarray, seq_len: int, name: str = "", continue_long: bool = True):
        if seq_len < 2:
            raise KnowlmError(f"--seq-len must be at least 2, got {seq_len}")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seq_len = seq_len
        self.name = name
        self._sizes = np.asarray(dataset.sizes)[self.indices].astype(np.int64)
        long = self._sizes > seq_len
        self.long_sequences = int(long.sum())
        self._starts = None  # first example of each sequence, when some sequence makes several
        pieces = np.ones(len(self.indices), dtype=np.int64)
        if continue_long and self.long_sequences:
            pieces[long] = -(-(self._sizes[long] - 1) // (seq_len - 1))  # ceil((L - 1) / (S - 1))
            self._starts = np.cumsum(pieces) - pieces
        self._count = int(pieces.sum())
        self.continued_examples = self._count - len(self.indices)
        self.truncated_tokens = 0 if continue_long else int((self._sizes - seq_len).clip(min=0).sum())

    def __len__(self) -> int:
        return self._count

    def _piece(self, i: int) -> tuple[int, int]:
        """(position in ``indices``, token offset) of example ``i``."""
        if self._starts is None:
            return i, 0
        j = int(np.searchsorted(self._starts, i, side="right")) - 1
        return j, (i - int(self._starts[j])) * (self.seq_len - 1)

    def length(self, i: int) -> int:
        j, offset = self._piece(i)
        return min(int(self._sizes[j]) - offset, self.seq_len)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        j, offset = self._piece(i)
        ids = np.asarray(self.dataset[int(self.indices[j])][offset:offset + self.seq_len], dtype=np.int64)
        return ids, ids

    def num_tokens(self) -> int:
        """Tokens of all examples (a continued sequence repeats one context token per extra piece)."""
        if self._starts is None:
            return int(np.minimum(self._sizes, self.seq_len).sum())
        return int(self._sizes.sum() + self.continued_examples)

    def report(self) -> dict:
        return {"prefix": self.name, "sequences": len(self.indices), "examples": len(self), "tokens": self.num_tokens(),
                "long_sequences": self.long_sequences, "continued_examples": self.continued_examples,
                "truncated_tokens": self.truncated_tokens}


def open_indexed(prefix: str):
    """Open ``PREFIX.bin/.idx`` with a clear error when it is missing or unreadable."""
    from knowlm.data.indexed import IndexedDataset

    base = _base(prefix)
    if not Path(f"{base}.bin").is_file() or not Path(f"{base}.idx").is_file():
        raise KnowlmError(f"indexed dataset not found: {base}.bin/.idx (build it with `knowlm data prepare`)")
    try:
        return IndexedDataset(str(base))
    except KnowlmError:
        raise
    except Exception as exc:  # a corrupt header or truncated file
        raise KnowlmError(f"cannot read indexed dataset {base}: {exc}") from None


def _base(prefix: str) -> Path:
    base = Path(prefix)
    return base.with_suffix("") if base.suffix in (".bin", ".idx") else base


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


def check_tokenizer(prefix: str, sidecar: dict, tokenizer) -> None:
    """Refuse ids made by another tokenizer: the model would train on the wrong tokens without a word."""
    if not sidecar or tokenizer is None:
        return
    ours = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    differ = [k for k, v in ours.items() if k in sidecar and sidecar[k] is not None and sidecar[k] != v]
    if differ:
        theirs = ", ".join(f"{k.replace('_token_id', '').replace('_size', '')} {sidecar[k]}" for k in ours if k in sidecar)
        mine = ", ".join(f"{k.replace('_token_id', '').replace('_size', '')} {v}" for k, v in ours.items())
        raise KnowlmError(f"dataset {prefix} was tokenized with {sidecar.get('tokenizer', 'another tokenizer')} ({theirs}) "
                          f"but the model's tokenizer has {mine}; re-run `knowlm data prepare --tokenizer` with the model")


def resolve_seq_len(given: int | None, sidecars: dict[str, dict]) -> tuple[int, str]:
    """(seq_len, where it came from): the flag, else the sidecars' (the longest, if they differ), else the default."""
    if given is not None:
        return int(given), "--seq-len"
    lengths = {p: s["seq_len"] for p, s in sidecars.items() if isinstance(s.get("seq_len"), int) and s["seq_len"] >= 2}
    if lengths:
        return max(lengths.values()), "PREFIX.json"
    return DEFAULT_SEQ_LEN, "default"


@dataclass
class PretrainSets:
    """What :func:`load_pretrain_sets` found: examples, weights and the accounting reported in the summary."""

    train: list[IndexedExamples]
    weights: list[float] | None
    evals: list[IndexedExamples]
    seq_len: int
    seq_len_from: str
    sidecars: dict[str, dict] = field(default_factory=dict)

    def info(self) -> dict:
        everything = self.train + self.evals
        return {
            "sources": [s.report() for s in self.train],
            "weights": self.weights,
            "seq_len": self.seq_len,
            "seq_len_from": self.seq_len_from,
            "eval_sequences": sum(len(s.indices) for s in self.evals),
            "eval_examples": sum(len(s) for s in self.evals),
            "long_sequences": sum(s.long_sequences for s in everything),
            "continued_examples": sum(s.continued_examples for s in everything),
            "truncated_tokens": sum(s.truncated_tokens for s in everything),
        }


def load_pretrain_sets(data: list[str], seq_len: int | None, eval_data: list[str] | None = None, eval_split: float = 0.0,
                       tokenizer=None, long_sequences: str = "continue") -> PretrainSets:
    """Open every source (checking its sidecar against ``tokenizer``) and cut it into examples."""
    from knowlm.data.indexed import read_sidecar

    pairs = parse_weighted(data)
    eval_pairs = parse_weighted(eval_data, "--eval-data") if eval_data else []
    weights = None if pairs[0][0] is None else [w for w, _ in pairs]
    datasets, sidecars = {}, {}
    for _, prefix in pairs + eval_pairs:
        datasets[prefix] = open_indexed(prefix)
        sidecars[prefix] = read_sidecar(_base(prefix))
        check_tokenizer(prefix, sidecars[prefix], tokenizer)
    length, source = resolve_seq_len(seq_len, sidecars)
    keep_going = long_sequences == "continue"
    train, evals = [], []
    for _, prefix in pairs:
        dataset = datasets[prefix]
        if len(dataset) == 0:
            raise KnowlmError(f"indexed dataset {prefix} holds no sequences")
        train_idx, eval_idx = _split_by_documents(dataset, 0.0 if eval_data else eval_split)
        train.append(IndexedExamples(dataset, train_idx, length, prefix, keep_going))
        if len(eval_idx):
            evals.append(IndexedExamples(dataset, eval_idx, length, prefix, keep_going))
    for _, prefix in eval_pairs:
        evals.append(IndexedExamples(datasets[prefix], np.arange(len(datasets[prefix])), length, prefix, keep_going))
    return PretrainSets(train, weights, evals, length, source, sidecars)
