"""KV-cache surgery for continuous batching: drop finished rows, stack a new batch under a running one.

``DynamicCache`` keeps one ``[batch, heads, seq, head_dim]`` key and value tensor per layer; rows are
left-padded so every row's newest token sits in the last column, and an attention mask over the
cache columns hides the padding. (A static, preallocated cache would replace these copies on GPU.)
"""

from __future__ import annotations


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


def trim_left(cache, mask):
    """Drop leading columns that are padding in every row (left behind by rows that finished)."""
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    if start == 0:
        return cache, mask
    for layer in layers(cache):
        layer.keys = layer.keys[:, :, start:, :]
        layer.values = layer.values[:, :, start:, :]
    return cache, mask[:, start:]
