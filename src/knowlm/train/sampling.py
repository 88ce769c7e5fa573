"""Deterministic, resumable data order shared by pretraining and SFT.

Everything is a pure function of global counters and the seed, so the data position is a few
integers in the checkpoint and a resumed run sees exactly the batches an uninterrupted one
would have seen, for any number of processes.

- :class:`BlendedIndex` interleaves several datasets so that every prefix of the stream keeps
  the requested proportions within one unit (Megatron blends the same way); each dataset is
  reshuffled every time it is exhausted.
- :class:`BlendedExamples` says what the weights mean (``blend_by``): a share of *sequences*
  (examples) or of *tokens* (Megatron's convention: its samples are all ``seq_len`` tokens).
  Token weights are turned into example weights through each source's mean example length.
  With packing the blended unit is the packed row (each row is filled from one source), so the
  rows of every batch keep the proportions; see :meth:`BlendedExamples.row_index`.
- :class:`ConcatExamples` walks several sets once, in order: evaluation sees every example once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

CHUNK = 1 << 16  # blend order is computed this many units at a time
BLEND_BY = ("tokens", "sequences")
PACKING_SAMPLE = 20_000  # examples per source simulated to learn how rows fill


class ExampleSet(Protocol):
    """What the stream needs from a dataset: its size, cheap lengths and (ids, labels) pairs."""

    def __len__(self) -> int: ...

    def length(self, i: int) -> int: ...

    def example(self, i: int): ...


class BlendedIndex:
    """Map global position ``g`` -> (dataset, index) for a weighted, shuffled blend."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None, seed: int, shuffle: bool = True):
        self.sizes = [int(s) for s in sizes]
        if any(s <= 0 for s in self.sizes):
            raise ValueError("every dataset in a blend needs at least one example")
        raw = np.asarray(weights if weights is not None else self.sizes, dtype=np.float64)
        self.weights = raw / raw.sum()
        self.seed = seed
        self.shuffle = shuffle
        # chunk c -> (dataset ids, per-dataset draw counters) for positions [c*CHUNK, (c+1)*CHUNK)
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._starts: list[np.ndarray] = [np.zeros(len(self.sizes), dtype=np.int64)]  # counts before chunk c
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @property
    def epoch_size(self) -> int:
        return sum(self.sizes)

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        if c in self._chunks:
            return self._chunks[c]
        while len(self._starts) <= c:  # counters at chunk starts, computed in order once
            self._compute(len(self._starts) - 1)
        return self._compute(c)

    def _compute(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        # Dataset d's k-th draw is due at time (k + 0.5) / w_d; merging all due times gives a stream
        # whose every prefix is within one unit of the exact proportions.
        start = self._starts[c]
        times, owners, draws = [], [], []
        for d, w in enumerate(self.weights):
            if w <= 0:
                continue
            k = start[d] + np.arange(int(np.ceil(CHUNK * w)) + 2)
            times.append((k + 0.5) / w)
            owners.append(np.full(len(k), d, dtype=np.int32))
            draws.append(k)
        t, o, k = np.concatenate(times), np.concatenate(owners), np.concatenate(draws)
        order = np.lexsort((o, t))[:CHUNK]
        owner, draw = o[order], k[order]
        if len(self._starts) == c + 1:
            self._starts.append(start + np.bincount(owner, minlength=len(self.sizes)))
        if len(self._chunks) > 4:
            self._chunks.pop(next(iter(self._chunks)))
        self._chunks[c] = (owner, draw)
        return owner, draw

    def _perm(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        if key not in self._perms:
            if len(self._perms) > 2 * len(self.sizes):
                self._perms.pop(next(iter(self._perms)))
            rng = np.random.default_rng([self.seed, d, epoch])
            dtype = np.int32 if self.sizes[d] < 2**31 else np.int64
            self._perms[key] = rng.permutation(self.sizes[d]).astype(dtype)
        return self._perms[key]

    def owner(self, g: int) -> tuple[int, int]:
        """(dataset, how many earlier positions that dataset owns) of position ``g``."""
        owner, draw = self._chunk(g // CHUNK)
        return int(owner[g % CHUNK]), int(draw[g % CHUNK])

    def item(self, d: int, k: int) -> int:
        """The ``k``-th example drawn from dataset ``d`` (a new permutation every pass)."""
        epoch, pos = divmod(k, self.sizes[d])
        return int(self._perm(d, epoch)[pos]) if self.shuffle else pos

    def locate(self, g: int) -> tuple[int, int]:
        d, k = self.owner(g)
        return d, self.item(d, k)


def _mean_length(examples: ExampleSet, limit: int = PACKING_SAMPLE) -> float:
    n = len(examples)
    picks = range(n) if n <= limit else np.linspace(0, n - 1, limit).astype(np.int64)
    return float(np.mean([examples.length(int(i)) for i in picks]))


def packed_fill(examples: ExampleSet, order: Callable[[int], int], max_len: int, limit: int = PACKING_SAMPLE) -> tuple[float, float]:
    """(examples per row, tokens per row) when ``examples`` (in ``order``) are packed greedily into rows."""
    n = min(len(examples), limit)
    rows = used = tokens = 0
    for k in range(n):
        size = min(examples.length(order(k)), max_len)
        if rows == 0 or used + size > max_len:
            rows, used = rows + 1, 0
        used += size
        tokens += size
    return n / max(rows, 1), tokens / max(rows, 1)


class BlendedExamples:
    """A blend of example sets addressed by global position, optionally grouped by length.

    ``group_by_length`` sorts each mega-batch (``group_size`` consecutive positions) by length,
    longest first, as HF's LengthGroupedSampler does: batches of similar lengths waste little
    padding while the order stays random at the mega-batch level.
    """

    def __init__(self, sets: Sequence[ExampleSet], weights: Sequence[float] | None, seed: int,
                 shuffle: bool = True, group_size: int = 0, blend_by: str = "sequences"):
        if blend_by not in BLEND_BY:
            raise ValueError(f"blend_by must be one of {BLEND_BY}")
        self.sets = list(sets)
        self.given_weights = list(weights) if weights is not None else None
        self.blend_by = blend_by
        self.seed = seed
        self._lengths = [_mean_length(s) for s in self.sets] if weights is not None and blend_by == "tokens" else None
        example_weights = self.given_weights
        if self._lengths is not None:  # a token share w_d needs w_d / mean_length_d of the examples
            example_weights = [w / max(m, 1e-9) for w, m in zip(self.given_weights, self._lengths)]
        self.index = BlendedIndex([len(s) for s in self.sets], example_weights, seed, shuffle)
        self.group_size = group_size
        self._group: tuple[int, np.ndarray] | None = None

    @property
    def epoch_size(self) -> int:
        return self.index.epoch_size

    def row_index(self, max_len: int) -> tuple[BlendedIndex, list[tuple[float, float]]]:
        """The blend of packed rows (each filled from one source) and each source's (examples, tokens) per row.

        Row weights make the requested share hold per batch of rows: ``w_d / tokens_per_row_d``
        for token weights, ``w_d / examples_per_row_d`` for sequence weights; without weights each
        source gets rows in proportion to the rows its examples fill, so an epoch stays an epoch.
        """
        fills = [packed_fill(s, lambda k, d=d: self.index.item(d, k), max_len) for d, s in enumerate(self.sets)]
        if self.given_weights is None:
            weights = [len(s) / per_row for s, (per_row, _) in zip(self.sets, fills)]
        elif self.blend_by == "tokens":
            weights = [w / tokens for w, (_, tokens) in zip(self.given_weights, fills)]
        else:
            weights = [w / per_row for w, (per_row, _) in zip(self.given_weights, fills)]
        rows = BlendedIndex([len(s) for s in self.sets], weights, self.seed, self.index.shuffle)
        return rows, fills

    def _where(self, g: int) -> tuple[int, int]:
        if self.group_size > 1:
            start = g - g % self.group_size
            if self._group is None or self._group[0] != start:
                spots = [self.index.locate(start + j) for j in range(self.group_size)]
                lengths = np.array([self.sets[d].length(i) for d, i in spots])
                self._group = (start, np.argsort(-lengths, kind="stable"))
            g = start + int(self._group[1][g - start])
        return self.index.locate(g)

    def length(self, g: int) -> int:
        d, i = self._where(g)
        return self.sets[d].length(i)

    def example(self, g: int):
        d, i = self._where(g)
        return self.sets[d].example(i)


class ConcatExamples:
    """Several example sets one after another: evaluation reads each example exactly once."""

    def __init__(self, sets: Sequence[ExampleSet]):
        self.sets = [s for s in sets if len(s)]
        self._ends = np.cumsum([len(s) for s in self.sets]) if self.sets else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _where(self, i: int) -> tuple[int, int]:
        d = int(np.searchsorted(self._ends, i, side="right"))
        return d, i - (int(self._ends[d - 1]) if d else 0)

    def length(self, i: int) -> int:
        d, j = self._where(i)
        return self.sets[d].length(j)

    def example(self, i: int):
        d, j = self._where(i)
        return self.sets[d].example(j)


@dataclass
class TrainData:
    """What a recipe's data setup hands to the shared loop."""

    train: BlendedExamples
    evals: ConcatExamples | None
    max_len: int
    info: dict  # reported in the summary (counts, truncation)
    collate: Callable | None = None  # rows -> tensors; None: the language-model collate
    padding_example: object = None  # what a process with no eval rows left feeds (None: one pad token)
