"""Continuous batching for Hugging Face causal LMs: the default serving backend.

One background thread owns the model. Each step it

1. admits waiting requests into the running batch (up to ``max_batch_size``): their prompts
   are prefilled together, left-padded, and their KV cache is merged into the running one
   (left-padding the shorter of the two so every row ends at the same column);
2. picks the next token of every row with that row's own decoding parameters (greedy or
   sampling, top-k/top-p, repetition penalty, per-request seed and logits processors);
3. streams the new text to each request, and drops rows that finished (EOS, stop string,
   ``max_new_tokens``, context end) or were cancelled, freeing their slot at once;
4. runs one forward pass over all remaining rows.

So requests that arrive while others are decoding share their forward passes, and a request
that finishes early never makes the others wait. Rows carry their own position ids and an
attention mask over the padded cache, which keeps every row's output identical to decoding
it alone. A batch never mixes LoRA adapters: a request for another adapter waits until the
running batch drains. Beam search (``num_beams > 1``) runs alone through ``model.generate``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.infer.backends import (
    EngineStoppedError,
    Event,
    GenerationRequest,
    PromptTooLongError,
    QueueFullError,
    RequestHandle,
)
from knowlm.decoding import DecodingParams
from knowlm.infer.engine import cut_at_stop
from knowlm.models.loading import prepare_tokenizer

log = logging.getLogger("knowlm.infer.batching")


@dataclass
class EngineConfig:
    max_batch_size: int = 16  # rows decoded together; 1 disables batching (one request at a time)
    max_waiting: int = 256  # requests queued beyond the running batch before submit() refuses (429)
    admit_window_s: float = 0.003  # when idle, wait this long for concurrent arrivals to prefill together
    max_context: int | None = None  # defaults to the model's max_position_embeddings
    # Intra-op threads of the engine thread only (OpenMP's setting is per thread). None keeps torch's
    # default; 1 is fastest for small models on a busy CPU, where spinning worker threads contend.
    num_threads: int | None = None


@dataclass
class _Row:
    handle: RequestHandle
    prompt_ids: list[int]
    params: DecodingParams
    rng: object = None  # torch.Generator when the request has a seed
    generated: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of text already streamed
    length: int = 0  # real (non-padding) tokens in this row's KV cache


def _hold_back(text: str, stops: list[str]) -> int:
    """How much of ``text`` is safe to stream: not a half-decoded character, not a possible stop-string start."""
    end = len(text.rstrip("\ufffd"))
    keep = end
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:k]):
                keep = min(keep, end - k)
                break
    return keep


class BatchingEngine:
    """Serve many concurrent generation requests from one in-memory HF model."""

    def __init__(self, model, tokenizer, config: EngineConfig | None = None, adapter_paths: dict[str, str] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        if self.config.max_batch_size < 1:
            raise KnowlmError("max_batch_size must be >= 1")
        self.adapter_paths = dict(adapter_paths or {})
        self.adapters = list(self.adapter_paths)
        prepare_tokenizer(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = self._eos_ids()
        self._byte_ids = _byte_token_ids(tokenizer)
        self.max_context = int(self.config.max_context or getattr(model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(getattr(model.config, "vocab_size", None) or len(tokenizer))
        self._is_peft = hasattr(model, "disable_adapter") and hasattr(model, "set_adapter")
        self._peft_current: str | None = None
        self._tok_lock = threading.Lock()
        self._cond = threading.Condition()
        self._waiting: deque[tuple[GenerationRequest, RequestHandle, list[int]]] = deque()
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Running batch state (engine thread only).
        self._rows: list[_Row] = []
        self._cache = None
        self._mask = None  # [B, T] attention mask over the cache columns
        self._logits = None  # [B, V] next-token logits of each row
        self._active_adapter: str | None = None
        # Counters for /metrics and tests.
        self.decode_passes = 0
        self.prefill_passes = 0
        self.batch_histogram: Counter[int] = Counter()  # decode batch size -> number of forward passes
        self.max_rows_seen = 0
        self.generated_tokens = 0
        self.finished_requests = 0
        self.cancelled_requests = 0
        self.batch_log: deque[tuple[str | None, int]] = deque(maxlen=4096)  # (adapter, rows) of recent decode passes
        self._recent: deque[tuple[float, int]] = deque()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str,
        adapters: dict[str, str] | None = None,
        dtype: str = "auto",
        device: str = "auto",
        **config,
    ) -> "BatchingEngine":
        """Load ``model`` (and each named LoRA adapter into one PEFT model) and build an engine."""
        from knowlm.models import load

        for name, path in (adapters or {}).items():  # fail before the (slow) model load
            if not (Path(path).expanduser() / "adapter_config.json").is_file():
                raise KnowlmError(f"adapter {name}: {path} is not a PEFT adapter directory (no adapter_config.json)")
        lm, tokenizer = load(model, dtype=dtype, device=device)
        adapters = dict(adapters or {})
        if adapters:
            lm = _load_adapters(lm, adapters)
        unknown = set(config) - set(EngineConfig.__dataclass_fields__)
        if unknown:
            raise KnowlmError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return cls(lm, tokenizer, EngineConfig(**config), adapter_paths=adapters)

    def _eos_ids(self) -> set[int]:
        ids = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return ids

    # -- public interface -----------------------------------------------------------------
    def start(self) -> "BatchingEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="knowlm-batching", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let running ones finish for up to ``timeout`` s, then fail the rest."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.busy():
            time.sleep(0.01)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._fail_all("server is shutting down")  # anything the thread did not get to

    def busy(self) -> bool:
        return bool(self._waiting or self._rows)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        with self._tok_lock:  # a fast tokenizer must not be used from two threads at once
            return list(self.tokenizer(text)["input_ids"])

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue a request; returns at once. Raises QueueFullError / EngineStoppedError / PromptTooLongError."""
        params = request.params.validate()
        if request.adapter is not None and request.adapter not in self.adapter_paths:
            raise KnowlmError(f"unknown adapter {request.adapter!r}")
        ids = self.encode(request.prompt)
        if len(ids) >= self.max_context:
            raise PromptTooLongError(f"prompt has {len(ids)} tokens; the model's context is {self.max_context}")
        handle = RequestHandle(request, prompt_tokens=len(ids), loop=loop)
        request.params = params
        with self._cond:
            if not self._accepting or self._thread is None:
                raise EngineStoppedError("the engine is not accepting requests (shutting down)")
            if len(self._waiting) >= self.config.max_waiting:
                raise QueueFullError(f"too many queued requests ({len(self._waiting)}); retry later")
            self._waiting.append((request, handle, ids))
            self._cond.notify_all()
        return handle

    def generate(self, prompt: str, params: DecodingParams | None = None, adapter: str | None = None):
        """Convenience: submit and wait (thread callers)."""
        return self.submit(GenerationRequest(prompt, params or DecodingParams(), adapter)).result()

    def stats(self) -> dict:
        now = time.monotonic()
        recent = [n for t, n in list(self._recent) if now - t <= 10.0]
        return {
            "backend": "hf",
            "waiting": len(self._waiting),
            "running": len(self._rows),
            "max_batch_size": self.config.max_batch_size,
            "decode_passes": self.decode_passes,
            "prefill_passes": self.prefill_passes,
            "batch_rows": sum(size * n for size, n in self.batch_histogram.items()),
            "max_rows_seen": self.max_rows_seen,
            "generated_tokens": self.generated_tokens,
            "finished_requests": self.finished_requests,
            "cancelled_requests": self.cancelled_requests,
            "tokens_per_second_10s": sum(recent) / 10.0,
        }

    # -- engine thread --------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        while True:
            with self._cond:
                while not self._waiting and not self._rows and not self._stopping:
                    self._cond.wait(timeout=0.5)
                if self._stopping:
                    break
                idle = not self._rows
            if idle and self.config.admit_window_s > 0 and len(self._waiting) < self.config.max_batch_size:
                time.sleep(self.config.admit_window_s)  # let concurrent arrivals share the prefill
            try:
                self._admit()
                if self._rows:
                    self._step()
            except Exception as exc:  # a bug must not kill the server: fail this batch, keep serving
                log.exception("engine step failed")
                self._fail_rows(f"internal error: {type(exc).__name__}: {exc}")
        self._fail_all("server is shutting down")

    def _admit(self) -> None:
        """Move waiting requests into the running batch (same adapter only) and prefill them."""
        new: list[tuple[GenerationRequest, RequestHandle, list[int]]] = []
        beam = None
        with self._cond:
            if any(h.cancelled.is_set() for _, h, _ in self._waiting):
                for item in [w for w in self._waiting if w[1].cancelled.is_set()]:
                    self._waiting.remove(item)
                    item[1].push(Event(finished=True, finish_reason="cancelled", prompt_tokens=len(item[2])))
                    self.cancelled_requests += 1
            if not self._rows and self._waiting:
                self._active_adapter = self._waiting[0][0].adapter
            while self._waiting and len(self._rows) + len(new) < self.config.max_batch_size:
                request, handle, ids = self._waiting[0]
                if request.adapter != self._active_adapter:
                    break  # a batch never mixes adapters; this one waits for the batch to drain
                if request.params.num_beams > 1:
                    if not self._rows and not new:
                        beam = self._waiting.popleft()
                    break  # beam search runs alone
                new.append(self._waiting.popleft())
        if beam is not None:
            self._run_beam(*beam)
            return
        if new:
            self._prefill(new)

    def _adapter_context(self):
        if not self._is_peft:
            return nullcontext()
        if self._active_adapter is None:
            return self.model.disable_adapter()
        if self._peft_current != self._active_adapter:
            self.model.set_adapter(self._active_adapter)
            self._peft_current = self._active_adapter
        return nullcontext()

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        import torch

        with self._adapter_context(), torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _prefill(self, items) -> None:
        import torch
        from transformers import DynamicCache

        device = self._device()
        width = max(len(ids) for _, _, ids in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (_, _, ids) in enumerate(items):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(input_ids, mask, positions, DynamicCache())
        self.prefill_passes += 1
        rows = []
        for request, handle, ids in items:
            rng = None
            if request.params.seed is not None:
                rng = torch.Generator(device=device).manual_seed(int(request.params.seed))
            rows.append(_Row(handle=handle, prompt_ids=ids, params=request.params, rng=rng, length=len(ids)))
            # Processors are per prompt: the caller built them for this request alone.
        if not self._rows:
            self._rows, self._cache, self._mask, self._logits = rows, cache, mask, logits
        else:
            self._cache, self._mask = _merge_caches(self._cache, self._mask, cache, mask)
            self._rows = self._rows + rows
            self._logits = torch.cat([self._logits, logits], dim=0)
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _step(self) -> None:
        import torch

        tokens = self._choose_tokens()
        keep: list[int] = []
        step_tokens = 0
        for i, (row, token) in enumerate(zip(self._rows, tokens)):
            if row.handle.cancelled.is_set():
                self._finish(row, "cancelled")
                continue
            reason = None
            if token in self.eos_ids:
                reason = "stop"
            else:
                row.generated.append(token)
                step_tokens += 1
            text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
            if reason is None and row.params.stop:
                cut, hit = cut_at_stop(text, row.params.stop)
                if hit:
                    text, reason = cut, "stop"
            if reason is None and (len(row.generated) >= row.params.max_new_tokens or row.length + 1 >= self.max_context):
                reason = "length"
            if reason is None:
                safe = _hold_back(self._stable_text(row.generated, text), row.params.stop)
                if safe > row.emitted:
                    row.handle.push(Event(text=text[row.emitted : safe], num_tokens=len(row.generated), prompt_tokens=len(row.prompt_ids)))
                    row.emitted = safe
                keep.append(i)
            else:
                self._finish(row, reason, text)
        self.generated_tokens += step_tokens
        self._recent.append((time.monotonic(), step_tokens))
        while self._recent and time.monotonic() - self._recent[0][0] > 10.0:
            self._recent.popleft()

        if not keep:
            self._rows, self._cache, self._mask, self._logits = [], None, None, None
            return
        if len(keep) < len(self._rows):
            index = torch.tensor(keep, device=self._mask.device)
            self._rows = [self._rows[i] for i in keep]
            _select_rows(self._cache, index)
            self._mask = self._mask[index]
            self._cache, self._mask = _trim_left(self._cache, self._mask)
            tokens = [tokens[i] for i in keep]
        device = self._mask.device
        input_ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
        positions = torch.tensor([row.length for row in self._rows], dtype=torch.long, device=device)[:, None]
        self._logits, self._cache = self._forward(input_ids, self._mask, positions, self._cache)
        for row in self._rows:
            row.length += 1
        self.decode_passes += 1
        self.batch_histogram[len(self._rows)] += 1
        self.batch_log.append((self._active_adapter, len(self._rows)))

    def _stable_text(self, generated: list[int], text: str) -> str:
        """The part of ``text`` later tokens cannot change.

        A run of byte-fallback tokens (``<0xE6>``...) decodes to one character when it is valid
        UTF-8 and to one U+FFFD per byte when it is not, so a trailing run is not final yet.
        """
        start = len(generated)
        while start > 0 and generated[start - 1] in self._byte_ids:
            start -= 1
        if start == len(generated):
            return text
        return self.tokenizer.decode(generated[:start], skip_special_tokens=True)

    def _choose_tokens(self) -> list[int]:
        """The next token of every row, each with its own decoding parameters."""
        import torch

        logits = self._logits
        tokens = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(self._rows):
            p = row.params
            processors = row.handle.request.processors
            if not (p.sampling or p.repetition_penalty != 1.0 or processors):
                continue
            scores = logits[i : i + 1].clone()
            if p.repetition_penalty != 1.0 or processors:
                seen = torch.tensor([row.prompt_ids + row.generated], dtype=torch.long, device=scores.device)
                if p.repetition_penalty != 1.0:
                    index = seen[0].unique()
                    picked = scores[0, index]
                    scores[0, index] = torch.where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty)
                for processor in processors or ():
                    scores = processor(seen, scores)
            if p.sampling:
                scores = scores / max(p.temperature, 1e-5)
                if p.top_k and p.top_k < scores.shape[-1]:
                    kth = torch.topk(scores, p.top_k, dim=-1).values[..., -1, None]
                    scores = scores.masked_fill(scores < kth, float("-inf"))
                if p.top_p < 1.0:
                    sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
                    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
                    drop = cumulative - sorted_scores.softmax(dim=-1) > p.top_p  # keep the token that crosses top_p
                    scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
                probs = scores.softmax(dim=-1)
                tokens[i] = int(torch.multinomial(probs, 1, generator=row.rng).item())
            else:
                tokens[i] = int(scores.argmax(dim=-1).item())
        return tokens

    def _finish(self, row: _Row, reason: str, text: str | None = None) -> None:
        if text is not None and len(text) > row.emitted:
            delta = text[row.emitted :]
        else:
            delta = ""
        row.handle.push(
            Event(text=delta, num_tokens=len(row.generated), finished=True, finish_reason=reason, prompt_tokens=len(row.prompt_ids))
        )
        self.finished_requests += 1
        self.cancelled_requests += reason == "cancelled"

    def _run_beam(self, request: GenerationRequest, handle: RequestHandle, ids: list[int]) -> None:
        """Beam search has no streaming and no batching here: one ``model.generate`` call."""
        import torch
        from transformers import GenerationConfig

        self._active_adapter = request.adapter
        p = request.params
        if handle.cancelled.is_set():
            handle.push(Event(finished=True, finish_reason="cancelled", prompt_tokens=len(ids)))
            return
        device = self._device()
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        config = GenerationConfig(
            max_new_tokens=min(p.max_new_tokens, self.max_context - len(ids)),
            num_beams=p.num_beams,
            do_sample=p.sampling,
            temperature=p.temperature if p.sampling else None,
            top_p=p.top_p if p.sampling else None,
            top_k=p.top_k if p.sampling else None,
            repetition_penalty=p.repetition_penalty,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.pad_id,
        )
        with self._adapter_context(), torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        self.prefill_passes += 1
        row = out[0, len(ids) :].tolist()
        hit_eos = False
        for j, token in enumerate(row):
            if token in self.eos_ids:
                row, hit_eos = row[:j], True
                break
        text, hit_stop = cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=True), p.stop)
        self.generated_tokens += len(row)
        handle.push(
            Event(text=text, num_tokens=len(row), finished=True, finish_reason="stop" if hit_eos or hit_stop else "length", prompt_tokens=len(ids))
        )
        self.finished_requests += 1

    def _device(self):
        return next(self.model.parameters()).device

    def _fail_rows(self, message: str, status: int = 500) -> None:
        for row in self._rows:
            row.handle.push(Event(error=message, status=status, prompt_tokens=len(row.prompt_ids)))
        self._rows, self._cache, self._mask, self._logits = [], None, None, None

    def _fail_all(self, message: str) -> None:
        self._fail_rows(message, status=503)
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for _, handle, ids in waiting:
            handle.push(Event(error=message, status=503, prompt_tokens=len(ids)))


def _byte_token_ids(tokenizer) -> frozenset[int]:
    """Ids of SentencePiece byte-fallback pieces (``<0x0A>``): their text depends on their neighbours."""
    import re

    pattern = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
    vocab = tokenizer.get_vocab()
    return frozenset(i for piece, i in vocab.items() if pattern.match(piece))


# -- KV cache surgery ----------------------------------------------------------------------
# DynamicCache keeps one [batch, heads, seq, head_dim] key and value tensor per layer.


def _layers(cache):
    return cache.layers


def _select_rows(cache, index) -> None:
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)


def _pad_left(tensor, columns: int, dim: int):
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    import torch

    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _merge_caches(cache_a, mask_a, cache_b, mask_b):
    """Stack two batches' caches: the shorter one is left-padded (masked out) to the longer one's width."""
    import torch
    from transformers import DynamicCache

    width = max(mask_a.shape[1], mask_b.shape[1])
    pad_a, pad_b = width - mask_a.shape[1], width - mask_b.shape[1]
    data = []
    for la, lb in zip(_layers(cache_a), _layers(cache_b)):
        keys = torch.cat([_pad_left(la.keys, pad_a, 2), _pad_left(lb.keys, pad_b, 2)], dim=0)
        values = torch.cat([_pad_left(la.values, pad_a, 2), _pad_left(lb.values, pad_b, 2)], dim=0)
        data.append((keys, values))
    mask = torch.cat([_pad_left(mask_a, pad_a, 1), _pad_left(mask_b, pad_b, 1)], dim=0)
    return DynamicCache(ddp_cache_data=data), mask


def _trim_left(cache, mask):
    """Drop leading columns that are padding in every row (left behind by rows that finished)."""
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    if start == 0:
        return cache, mask
    for layer in _layers(cache):
        layer.keys = layer.keys[:, :, start:, :]
        layer.values = layer.values[:, :, start:, :]
    return cache, mask[:, start:]


def _load_adapters(lm, adapters: dict[str, str]):
    """One PEFT model holding every named adapter (``set_adapter`` picks one per batch)."""
    from peft import PeftModel

    model = lm
    for index, (name, path) in enumerate(adapters.items()):
        directory = Path(path).expanduser()
        if not (directory / "adapter_config.json").is_file():
            raise KnowlmError(f"adapter {name}: {path} is not a PEFT adapter directory (no adapter_config.json)")
        try:
            if index == 0:
                model = PeftModel.from_pretrained(lm, str(directory), adapter_name=name)
            else:
                model.load_adapter(str(directory), adapter_name=name)
        except (OSError, ValueError, KeyError) as exc:
            raise KnowlmError(f"cannot load adapter {name} from {path}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model
