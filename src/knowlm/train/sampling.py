"""Deterministic, resumable data order shared by pretraining and SFT.

Everything is a pure function of a global example counter ``g`` and the seed, so the data
position is one integer in the checkpoint and a resumed run sees exactly the batches an
uninterrupted one would have seen, for any number of processes.

- :class:`BlendedIndex` interleaves several datasets so that every prefix of the stream
  keeps the requested proportions (KnowLM sampled per source; Megatron blends the same way);
  each dataset is reshuffled every time it is exhausted.
- :class:`ExampleStream` turns examples into rows (one example per row, or several packed
  into one row), hands each process its share of each global micro-batch, and pads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

CHUNK = 1 << 16  # blend order is computed this many examples at a time


class ExampleSet(Protocol):
    """What the stream needs from a dataset: its size, cheap lengths and (ids, labels) pairs."""

    def __len__(self) -> int: ...

    def length(self, i: int) -> int: ...

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]: ...


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
        # whose every prefix is within one example of the exact proportions.
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

    def locate(self, g: int) -> tuple[int, int]:
        owner, draw = self._chunk(g // CHUNK)
        d, k = int(owner[g % CHUNK]), int(draw[g % CHUNK])
        epoch, pos = divmod(k, self.sizes[d])
        return d, int(self._perm(d, epoch)[pos]) if self.shuffle else pos


class BlendedExamples:
    """A blend of example sets addressed by global position, optionally grouped by length.

    ``group_by_length`` sorts each mega-batch (``group_size`` consecutive positions) by length,
    longest first, as HF's LengthGroupedSampler does: batches of similar lengths waste little
    padding while the order stays random at the mega-batch level.
    """

    def __init__(self, sets: Sequence[ExampleSet], weights: Sequence[float] | None, seed: int,
                 shuffle: bool = True, group_size: int = 0):
        self.sets = list(sets)
        self.index = BlendedIndex([len(s) for s in self.sets], weights, seed, shuffle)
        self.group_size = group_size
        self._group: tuple[int, np.ndarray] | None = None

    @property
    def epoch_size(self) -> int:
        return self.index.epoch_size

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

    def example(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = self._where(g)
        return self.sets[d].example(i)


@dataclass
class TrainData:
    """What a recipe's data setup hands to the shared loop."""

    train: "BlendedExamples"
    evals: "BlendedExamples | None"
    max_len: int
    info: dict  # reported in the summary (counts, truncation)


@dataclass
class Row:
    """One training sequence: the examples (global positions) it holds."""

    members: list[int]


class ExampleStream:
    """Rows and micro-batches from a :class:`BlendedExamples`, resumable from ``position``.

    Every process walks the same global sequence of rows and keeps its own slice of each global
    micro-batch (``world * micro_batch_size`` rows), so ranks never overlap and the order does
    not depend on how the work is split.
    """

    def __init__(self, examples: BlendedExamples, max_len: int, micro_batch_size: int, world: int = 1,
                 rank: int = 0, packing: bool = False, pad_id: int = 0):
        self.examples = examples
        self.max_len = max_len
        self.micro_batch_size = micro_batch_size
        self.world = world
        self.rank = rank
        self.packing = packing
        self.pad_id = pad_id
        self.position = 0  # next global example position

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])

    @property
    def epoch(self) -> float:
        return self.position / self.examples.epoch_size

    def _next_row(self) -> Row:
        members = [self.position]
        used = min(self.examples.length(self.position), self.max_len)
        self.position += 1
        if self.packing:
            while True:
                size = min(self.examples.length(self.position), self.max_len)
                if used + size > self.max_len:
                    break
                members.append(self.position)
                used += size
                self.position += 1
        return Row(members)

    def next_batch(self) -> dict:
        """This process's share of the next global micro-batch, collated to tensors."""
        rows = [self._next_row() for _ in range(self.world * self.micro_batch_size)]
        mine = rows[self.rank * self.micro_batch_size:(self.rank + 1) * self.micro_batch_size]
        return collate([[self.examples.example(g) for g in row.members] for row in mine],
                       self.max_len, self.pad_id, self.packing)

    def rows_per_epoch(self, limit: int = 5_000_000) -> int:
        """How many rows one epoch makes (packing simulated on lengths; estimated for huge sets)."""
        size = self.examples.epoch_size
        if not self.packing:
            return size
        saved = self.position
        self.position = 0
        try:
            if size > limit:
                sample = [min(self.examples.length(g), self.max_len) for g in range(0, size, max(1, size // limit))]
                return max(1, int(np.ceil(size * float(np.mean(sample)) / self.max_len)))
            rows = 0
            while self.position < size:
                self._next_row()
                rows += 1
            return rows
        finally:
            self.position = saved


def collate(rows: list[list[tuple[np.ndarray, np.ndarray]]], max_len: int, pad_id: int, packing: bool) -> dict:
    """Right-pad rows into a batch.

    Padded positions get ``attention_mask`` 0 and label -100. A packed row also gets
    ``position_ids`` restarting at 0 for each example and a block-diagonal causal 4-D mask,
    so packed examples never attend to each other.
    """
    import torch

    lengths = [sum(min(len(ids), max_len) for ids, _ in row) for row in rows]
    width = max(lengths)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    segments = torch.full((batch, width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for s, (ids, labs) in enumerate(row):
            n = min(len(ids), max_len - at)
            if n <= 0:
                break
            input_ids[b, at:at + n] = torch.from_numpy(np.asarray(ids[:n], dtype=np.int64))
            labels[b, at:at + n] = torch.from_numpy(np.asarray(labs[:n], dtype=np.int64))
            attention[b, at:at + n] = 1
            positions[b, at:at + n] = torch.arange(n)
            segments[b, at:at + n] = s
            if s > 0:  # never predict an example's first token from the previous example
                labels[b, at] = -100
            at += n
    out = {"input_ids": input_ids, "labels": labels, "num_tokens": int(attention.sum())}
    if packing:
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
        same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
        # padded query rows attend to themselves only, so softmax never sees an empty row
        mask = (same & causal) | torch.eye(width, dtype=torch.bool)
        out["attention_mask"] = mask[:, None]
        out["position_ids"] = positions
    else:
        out["attention_mask"] = attention
    return out
