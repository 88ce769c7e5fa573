"""Rows and micro-batches: the resumable stream the training loop reads, and collation.

Every process walks the same global sequence of rows and keeps its own slice of each global
micro-batch (``world * micro_batch_size`` rows), so ranks never overlap and the order does not
depend on how the work is split. Without packing a row is one example of the blend. With
packing a row is filled from one source (greedily, in that source's shuffled order), and the
rows follow the row-level blend, so every batch keeps the source proportions in rows.

A packed row carries ``position_ids`` restarting at 0 for each example and no attention mask:
transformers derives the document boundaries from the positions (varlen flash-attention, a
flex-attention block mask, or a block-diagonal mask for SDPA/eager), so no dense 4-D mask is
built here and packed examples never attend to each other.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from knowlm.train.sampling import BlendedExamples


class ExampleStream:
    """Rows and micro-batches from a :class:`BlendedExamples`, resumable from its ``state_dict``."""

    def __init__(self, examples: BlendedExamples, max_len: int, micro_batch_size: int, world: int = 1,
                 rank: int = 0, packing: bool = False, pad_id: int = 0, collate_fn: Callable | None = None):
        self.examples = examples
        self.max_len = max_len
        self.micro_batch_size = micro_batch_size
        self.world = world
        self.rank = rank
        self.packing = packing
        self.pad_id = pad_id
        self.collate_fn = collate_fn
        self.position = 0  # next global example (unpacked) or row (packed)
        self.rows = self.fills = None
        self.source_positions = [0] * len(examples.sets)  # packed: examples consumed per source
        if packing:
            self.rows, self.fills = examples.row_index(max_len)

    def state_dict(self) -> dict:
        return {"position": self.position, "source_positions": list(self.source_positions)}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.source_positions = [int(p) for p in state.get("source_positions", self.source_positions)]

    @property
    def epoch(self) -> float:
        return self.epoch_of(self.state_dict())

    def epoch_of(self, state: dict) -> float:
        """Passes over the data made up to ``state`` (a ``state_dict``)."""
        consumed = sum(state["source_positions"]) if self.packing else state["position"]
        return consumed / self.examples.epoch_size

    def _next_row(self) -> list[tuple[int, int]]:
        """The (source, example index) pairs of the next row."""
        if not self.packing:
            d, i = self.examples._where(self.position)
            self.position += 1
            return [(d, i)]
        d, _ = self.rows.owner(self.position)
        self.position += 1
        source = self.examples.sets[d]
        members, used = [], 0
        while True:
            i = self.examples.index.item(d, self.source_positions[d])
            size = min(source.length(i), self.max_len)
            if members and used + size > self.max_len:
                return members
            members.append((d, i))
            used += size
            self.source_positions[d] += 1

    def next_rows(self) -> list[list[tuple[int, int]]]:
        """This process's rows of the next global micro-batch."""
        rows = [self._next_row() for _ in range(self.world * self.micro_batch_size)]
        return rows[self.rank * self.micro_batch_size:(self.rank + 1) * self.micro_batch_size]

    def materialise(self, rows: list[list[tuple[int, int]]]) -> dict:
        sets = self.examples.sets
        examples = [[sets[d].example(i) for d, i in row] for row in rows]
        if self.collate_fn is not None:
            return self.collate_fn(examples, self.max_len, self.pad_id)
        return collate(examples, self.max_len, self.pad_id, self.packing)

    def next_batch(self) -> dict:
        """This process's share of the next global micro-batch, collated to tensors."""
        rows = self.next_rows()
        batch = self.materialise(rows)
        batch["sources"] = [[d for d, _ in row] for row in rows]
        return batch

    def rows_per_epoch(self, limit: int = 5_000_000) -> int:
        """How many rows one epoch makes (packing: from each source's measured fill)."""
        size = self.examples.epoch_size
        if not self.packing:
            return size
        return max(1, int(np.ceil(sum(len(s) / per_row for s, (per_row, _) in zip(self.examples.sets, self.fills)))))


class Prefetcher:
    """The micro-batches of the coming optimizer steps, built ahead in a background thread.

    Each item is ``(batches, stream state after them)``: the loop checkpoints that state, not the
    stream's (which is ahead), so resume stays exact. On CUDA the tensors are pinned, so the copy
    to the GPU overlaps the previous step. ``depth`` 0 builds synchronously in the caller.
    """

    def __init__(self, stream: ExampleStream, per_step: int, steps: int, depth: int = 0, pin: bool = False):
        import queue
        import threading

        self.stream, self.per_step, self.depth, self.pin = stream, per_step, depth, pin
        self._left = steps
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = None
        if depth > 0 and steps > 0:
            self._thread = threading.Thread(target=self._fill, name="knowlm-prefetch", daemon=True)
            self._thread.start()

    def _build(self):
        batches = [self.stream.next_batch() for _ in range(self.per_step)]
        if self.pin:
            for batch in batches:
                for key, value in batch.items():
                    if hasattr(value, "pin_memory"):
                        batch[key] = value.pin_memory()
        return batches, self.stream.state_dict()

    def _fill(self) -> None:
        import queue

        try:
            for _ in range(self._left):
                item = self._build()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:  # the loop is busy: wait
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # surfaced in the loop, not lost in the thread
            self._queue.put(exc)

    def next(self):
        if self._thread is None:
            return self._build()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def collate(rows: list[list[tuple[np.ndarray, np.ndarray]]], max_len: int, pad_id: int, packing: bool) -> dict:
    """Right-pad rows into a batch.

    Padded positions get label -100. Unpacked rows get a 2-D ``attention_mask``; packed rows get
    ``position_ids`` restarting at 0 for each example (the padding tail is one more segment) and
    their first label of every example but the first masked, so nothing is predicted across.
    """
    import torch

    lengths = [sum(min(len(ids), max_len) for ids, _ in row) for row in rows]
    width = max(lengths)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
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
            if s > 0:  # never predict an example's first token from the previous example
                labels[b, at] = -100
            at += n
        positions[b, at:] = torch.arange(width - at)
    out = {"input_ids": input_ids, "labels": labels, "num_tokens": int(attention.sum())}
    if packing:
        out["position_ids"] = positions
    else:
        out["attention_mask"] = attention
    return out
