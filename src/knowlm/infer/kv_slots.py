"""A preallocated KV cache of fixed batch slots, so the decode step has one shape and can be compiled.

With :class:`~knowlm.infer.kv_cache.DynamicBatch` every decode step has a new shape (rows come and go,
the cache grows a column) and every admission copies the whole cache; on a GPU the step is then bound
by Python and kernel-launch overhead. Here (``EngineConfig.compile``) a transformers ``StaticCache``
holds ``slots`` rows of ``length`` columns, allocated once:

* a request takes a free slot; its prompt is prefilled as before and copied into the slot so that its
  tokens end at the shared write column ``col`` (rows stay right-aligned, as in the dynamic layout);
* every decode step writes column ``col`` of all slots and attends through a ``[slots, length]`` mask,
  so input, mask and cache shapes never change: on CUDA the step runs through ``torch.compile``
  (``mode="reduce-overhead"``: CUDA graphs, transformers' own compile path for static caches);
* a finished row just frees its slot; only when ``col`` reaches the end, or a new prompt is longer
  than ``col``, are the used columns moved (one copy, rarely).

Free slots decode a padding token alongside (their output is ignored): on a GPU a decode step costs
about the same for any batch up to the slot count. Answers equal the dynamic path's (tested on CPU,
where the same layout runs without compiling).
"""

from __future__ import annotations

import logging
from typing import Sequence

from knowlm.errors import KnowlmError

log = logging.getLogger("knowlm.infer.slots")


class SlotBatch:
    """The running batch in ``slots`` fixed rows of a static cache; rows listed in the engine's order."""

    def __init__(self, model, slots: int, length: int, pad_id: int, compile: bool):
        import torch
        from transformers import StaticCache

        if len(set(getattr(model, "hf_device_map", {}).values())) > 1:
            raise KnowlmError("--compile needs the whole model on one device (its KV cache slots live there)")
        config = model.config.get_text_config(decoder=True)
        self.cache = StaticCache(config=config, max_cache_len=length)
        if any(not hasattr(layer, "cumulative_length") or getattr(layer, "is_sliding", False) for layer in self.cache.layers):
            raise KnowlmError("--compile needs a model whose layers all use full attention, and transformers >= 5.25")
        param = next(model.parameters())
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache.early_initialization(batch_size=slots, num_heads=heads, head_dim=head_dim, dtype=param.dtype, device=param.device)
        size = 2 * config.num_hidden_layers * slots * heads * length * head_dim * param.element_size()
        log.info("static KV cache: %d slots x %d tokens, %.2f GiB", slots, length, size / 2**30)
        self.model = model
        self.slots, self.length, self.pad_id = slots, length, pad_id
        self.device = param.device
        self.mask = torch.zeros((slots, length), dtype=torch.long, device=self.device)
        self.col = 0  # the column the next decode step writes
        self.row_slots: list[int] = []  # the slot of each row, in row order
        self.free = list(range(slots))
        self.moves = 0  # times the used columns were moved (tests, stats)
        self.compiled = compile and self.device.type == "cuda"
        if self.compiled:  # transformers' compile settings for static-cache decoding, in a wrapper of our own
            from transformers import CompileConfig

            self._call = torch.compile(model.__call__, **CompileConfig(dynamic=False).to_dict())
        else:
            self._call = model.__call__
        from knowlm.infer.kv_cache import cache_kwarg

        self._cache_kwarg = cache_kwarg(model)

    # -- rows ------------------------------------------------------------------------------
    def admit(self, cache, mask, lengths: Sequence[int], running: Sequence[int]) -> None:
        """Copy prefilled rows (their ``DynamicCache`` and left-padded ``mask``) into free slots."""
        import torch

        width = mask.shape[1]
        if len(lengths) > len(self.free):
            raise KnowlmError("no free cache slot")  # the engine admits at most max_batch_size rows
        if self.col < width or self.col >= self.length:
            used = max(running, default=0)
            self._move(max(width, used), used)
        slots = [self.free.pop(0) for _ in lengths]
        index = torch.tensor(slots, device=self.device)
        start = self.col - width
        for target, source in zip(self.cache.layers, cache.layers):
            target.keys[index, :, start : self.col] = source.keys
            target.values[index, :, start : self.col] = source.values
        self.mask[index] = 0
        self.mask[index, start : self.col] = mask.to(self.mask.dtype)
        self.row_slots += slots

    def keep(self, index: Sequence[int], lengths: Sequence[int]) -> None:
        """Keep rows ``index`` (in that order); the others' slots become free."""
        kept = [self.row_slots[i] for i in index]
        self.free += sorted(set(self.row_slots) - set(kept))
        self.row_slots = kept

    def clear(self) -> None:
        self.row_slots, self.free, self.col = [], list(range(self.slots)), 0

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], lengths: Sequence[int], forward=None):
        """One step for every slot: row ``i`` reads ``tokens[i]`` at position ``lengths[i]``; returns the
        rows' next-token logits in row order. (``forward`` is the dynamic path's; slots call the model.)"""
        import torch

        if self.col >= self.length:
            self._move(max(lengths), max(lengths))
        ids, positions = [self.pad_id] * self.slots, [0] * self.slots
        for slot, token, length in zip(self.row_slots, tokens, lengths):
            ids[slot], positions[slot] = token, length
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)[:, None]
        position_ids = torch.tensor(positions, dtype=torch.long, device=self.device)[:, None]
        self.mask[:, self.col] = 1
        logits = self._step(input_ids, position_ids)
        self.col += 1
        return logits[torch.tensor(self.row_slots, device=self.device)]

    def _step(self, input_ids, position_ids):
        import torch

        kwargs = {"input_ids": input_ids, "attention_mask": self.mask, "position_ids": position_ids, "use_cache": True, self._cache_kwarg: self.cache}
        with torch.no_grad():  # as transformers' generate runs its compiled decode (not inference_mode)
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
                try:
                    out = self._call(**kwargs)
                except Exception:
                    log.exception("the compiled decode step failed; decoding without compiling from now on")
                    self.compiled, self._call = False, self.model.__call__
                    self._set_column(self.col)
                    out = self._call(**kwargs)
            else:
                out = self._call(**kwargs)
            # A copy: CUDA graphs reuse their output buffers at the next replay.
            return out.logits[:, -1, :].to(torch.float32, copy=True)

    def warm_up(self) -> None:
        """Compile (and capture) the decode step before the first request needs it."""
        import torch

        if not self.compiled:
            return

        for _ in range(3):  # compile, then warm-up runs and the CUDA graph capture
            self.mask[:, self.col] = 1
            ids = torch.full((self.slots, 1), self.pad_id, dtype=torch.long, device=self.device)
            self._step(ids, torch.zeros_like(ids))
        self.mask.zero_()
        self._set_column(0)

    # -- layout ------------------------------------------------------------------------------
    def _move(self, target: int, used: int) -> None:
        """Move the ``used`` columns before ``col`` (every running row's tokens) to end at column ``target``:
        room at the right end when the cache is full, or room at the left for a longer prompt."""
        if not self.row_slots:
            self.mask.zero_()
        elif target != self.col:
            self.moves += 1
            src, dst = slice(self.col - used, self.col), slice(target - used, target)
            for layer in self.cache.layers:
                layer.keys[:, :, dst] = layer.keys[:, :, src].clone()
                layer.values[:, :, dst] = layer.values[:, :, src].clone()
            self.mask[:, dst] = self.mask[:, src].clone()
            self.mask[:, : target - used] = 0
            self.mask[:, target:] = 0
        self._set_column(target)

    def _set_column(self, col: int) -> None:
        self.col = col
        for layer in self.cache.layers:  # where StaticLayer writes the next token
            layer.cumulative_length.fill_(col)
