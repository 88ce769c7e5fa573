"""The running batch's KV cache for continuous batching, as a growing ``DynamicCache`` (the default).

``DynamicCache`` keeps one ``[batch, heads, seq, head_dim]`` key and value tensor per layer; rows are
left-padded so every row's newest token sits in the last column and row ``i``'s tokens are exactly its
last ``lengths[i]`` columns; an attention mask over the cache columns hides the padding. Admitting
rows stacks their prefilled cache under the running one; dropping rows selects the others and trims
columns no row uses any more (found from the host-side lengths, without a device sync).
:class:`knowlm.infer.kv_slots.SlotBatch` is the preallocated alternative for compiled decoding.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence


def cache_kwarg(model) -> str:
    """The forward keyword for the KV cache: ``cache`` (transformers >= 5.25), else ``past_key_values``.

    Read from the transformers model itself: a PEFT wrapper's ``forward`` takes ``**kwargs`` and hands
    them on, so its own signature names neither.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def layers(cache):
    return cache.layers


def select_rows(cache, index) -> None:
    for layer in layers(cache):
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)


def _pad_left(tensor, columns: int, dim: int):
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    import torch

    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge_caches(cache_a, mask_a, cache_b, mask_b):
    """Stack two batches' caches: the shorter one is left-padded (masked out) to the longer one's width."""
    import torch
    from transformers import DynamicCache

    width = max(mask_a.shape[1], mask_b.shape[1])
    pad_a, pad_b = width - mask_a.shape[1], width - mask_b.shape[1]
    data = []
    for la, lb in zip(layers(cache_a), layers(cache_b)):
        keys = torch.cat([_pad_left(la.keys, pad_a, 2), _pad_left(lb.keys, pad_b, 2)], dim=0)
        values = torch.cat([_pad_left(la.values, pad_a, 2), _pad_left(lb.values, pad_b, 2)], dim=0)
        data.append((keys, values))
    mask = torch.cat([_pad_left(mask_a, pad_a, 1), _pad_left(mask_b, pad_b, 1)], dim=0)
    return DynamicCache(ddp_cache_data=data), mask


def trim_left(cache, mask, start: int):
    """Drop the first ``start`` columns (padding in every row, left behind by rows that finished)."""
    if start <= 0:
        return cache, mask
    for layer in layers(cache):
        layer.keys = layer.keys[:, :, start:, :]
        layer.values = layer.values[:, :, start:, :]
    return cache, mask[:, start:]


# forward(input_ids, attention_mask, position_ids, cache) -> next-token logits [rows, vocab]
Forward = Callable[..., object]


class DynamicBatch:
    """The running batch's cache and attention mask, rows in the engine's row order."""

    def __init__(self) -> None:
        self.cache = None
        self.mask = None  # [rows, columns]

    def admit(self, cache, mask, lengths: Sequence[int], running: Sequence[int]) -> None:
        """Add prefilled rows (``cache`` and left-padded ``mask`` of the new rows, ``lengths`` their prompt
        lengths) after the running ones (``running``: their tokens in the cache)."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
        else:
            self.cache, self.mask = merge_caches(self.cache, self.mask, cache, mask)

    def keep(self, index: Sequence[int], lengths: Sequence[int]) -> None:
        """Keep rows ``index`` (in that order); ``lengths``: their tokens in the cache."""
        import torch

        rows = torch.tensor(list(index), device=self.mask.device)
        select_rows(self.cache, rows)
        self.mask = self.mask[rows]
        self.cache, self.mask = trim_left(self.cache, self.mask, self.mask.shape[1] - max(lengths))

    def decode(self, tokens: Sequence[int], lengths: Sequence[int], forward: Forward):
        """One step: row ``i`` reads ``tokens[i]`` at position ``lengths[i]`` (its tokens so far); returns
        the next-token logits."""
        import torch

        device = self.mask.device
        input_ids = torch.tensor(list(tokens), dtype=torch.long, device=device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        position_ids = torch.tensor(list(lengths), dtype=torch.long, device=device)[:, None]
        return forward(input_ids, self.mask, position_ids, self.cache)

    def clear(self) -> None:
        self.cache = self.mask = None
