"""Continuous batching for Hugging Face causal LMs: the default serving backend.

One background thread owns the batch. Each step it

1. admits waiting requests into the running batch (up to ``max_batch_size``): their prompts are
   prefilled together, left-padded, and their KV cache joins the running one (a growing
   ``DynamicCache``, :mod:`knowlm.infer.kv_cache`; or, with ``compile``, fixed slots of a static cache
   whose decode step runs as a CUDA graph on a GPU, :mod:`knowlm.infer.kv_slots`);
2. picks the next token of every row with that row's own decoding parameters, penalties,
   processors and seeded generator (:mod:`knowlm.infer.sampling`, the code the batched
   ``Generator`` uses too);
3. streams the new text to each request (decoded incrementally, :mod:`knowlm.infer.detokenize`), and
   drops rows that finished (EOS, stop string or token, ``max_new_tokens``, context end), were
   cancelled, or failed, freeing their slot at once;
4. runs one forward pass over all remaining rows.

Requests that arrive while others decode share their forward passes, and rows carry their own
position ids and an attention mask over the padded cache, so every row's output is identical to
decoding it alone. Rows for different LoRA adapters and the base model share a batch
(:class:`~knowlm.infer.adapters.AdapterRouter`). One row's failure (bad numerics, a logits
processor raising) ends that request only. Beam search runs beside the batch on its own threads
(:mod:`knowlm.infer.solo`).

The module stays whole (over 400 lines) on purpose: the batch state (rows, KV cache, logits) belongs
to the engine thread, and admission, the step and finishing read and write it together; the parts
that stand alone already live beside it (sampling, KV caches, detokenizing, beam search, adapters).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

from knowlm.decoding import DecodingParams
from knowlm.errors import KnowlmError
from knowlm.infer.backends import (
    BackendError,
    EngineStoppedError,
    Event,
    GenerationRequest,
    PromptTooLongError,
    QueueFullError,
    RequestHandle,
    TokenizerAccess,
    TokenRate,
)
from knowlm.infer.detokenize import IncrementalText, byte_token_ids
from knowlm.infer.engine import check_token_ids, cut_at_stop, eos_token_ids, streamable_prefix
from knowlm.infer.kv_cache import DynamicBatch, cache_kwarg
from knowlm.infer.sampling import RowError, choose_tokens, hold_back_ids, row_generator
from knowlm.infer.solo import SoloRunner, run_beam
from knowlm.models.loading import prepare_tokenizer

log = logging.getLogger("knowlm.infer.batching")
FAILED = "generation failed for this request"  # what a client sees of an internal error; the log has the rest


@dataclass
class EngineConfig:
    max_batch_size: int = 16  # rows decoded together; 1 disables batching (one request at a time)
    max_waiting: int = 256  # requests queued beyond the running batch before submit() refuses (429)
    admit_window_s: float = 0.003  # when idle, wait this long for concurrent arrivals to prefill together
    max_context: int | None = None  # defaults to the model's max_position_embeddings
    # Intra-op threads of the engine thread only (OpenMP's setting is per thread). None keeps torch's
    # default; 1 is fastest for small models on a busy CPU, where spinning worker threads contend.
    num_threads: int | None = None
    solo_workers: int = 1  # beam searches running beside the batch at once
    max_solo_waiting: int = 16  # beam searches queued before 429
    max_logprobs: int = 20  # most alternatives a request may ask per token
    # Static KV cache of max_batch_size slots (kv_slots); on CUDA the decode step is compiled with CUDA
    # graphs. Not with LoRA adapters (their per-row routing cannot be captured).
    compile: bool = False
    cache_len: int | None = None  # with compile: columns per slot (default max_context); a row's context

    def validate(self) -> "EngineConfig":
        if self.max_batch_size < 1:
            raise KnowlmError("max_batch_size must be >= 1")
        if self.cache_len is not None and (not self.compile or self.cache_len < 2):
            raise KnowlmError("--cache-len takes --compile and at least 2 tokens")
        return self


@dataclass
class _Row:
    handle: RequestHandle
    prompt_ids: list[int]
    params: DecodingParams
    adapter: str | None
    rng: object = None  # the row's own torch.Generator (sampling rows)
    hold_back: list[int] = field(default_factory=list)  # EOS + stop token ids, kept out until min_new_tokens
    generated: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of text already streamed
    length: int = 0  # real (non-padding) tokens in this row's KV cache
    logprobs: list = field(default_factory=list)  # (token, logprob, top) not yet sent
    text: IncrementalText | None = None  # the answer's text so far


class BatchingEngine(TokenizerAccess):
    """Serve many concurrent generation requests from one in-memory HF model."""

    def __init__(self, model, tokenizer, config: EngineConfig | None = None, adapter_paths: dict[str, str] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = (config or EngineConfig()).validate()
        self.adapter_paths = dict(adapter_paths or {})
        self.adapters = list(self.adapter_paths)
        prepare_tokenizer(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = set(eos_token_ids(model, tokenizer))
        self._byte_ids = byte_token_ids(tokenizer)
        self.max_context = int(self.config.max_context or getattr(model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(getattr(model.config, "vocab_size", None) or len(tokenizer))
        self.router = None
        if hasattr(model, "peft_config"):
            from knowlm.infer.adapters import AdapterRouter

            self.router = AdapterRouter(model)
        self._cache_kwarg = cache_kwarg(model)
        self._kv = DynamicBatch()  # the running batch's KV cache, rows in self._rows order
        if self.config.compile:
            if self.router is not None:
                raise KnowlmError("--compile cannot serve LoRA adapters (rows route to adapters in Python); merge the adapter or drop --compile")
            from knowlm.infer.kv_slots import SlotBatch

            self.max_context = min(self.max_context, int(self.config.cache_len or self.max_context))
            self._kv = SlotBatch(model, self.config.max_batch_size, self.max_context, self.pad_id, compile=True)
        self._tok_lock = threading.Lock()
        self._cond = threading.Condition()
        self._waiting: deque[tuple[GenerationRequest, RequestHandle, list[int]]] = deque()
        self._solo = SoloRunner(partial(run_beam, self), self.config.solo_workers, self.config.max_solo_waiting, self.config.num_threads)
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Running batch state (engine thread only).
        self._rows: list[_Row] = []
        self._logits = None  # [B, V] next-token logits of each row
        # Counters for /metrics and tests.
        self.decode_passes = 0
        self.prefill_passes = 0
        self.batch_histogram: Counter[int] = Counter()  # decode batch size -> number of forward passes
        self.max_rows_seen = 0
        self.generated_tokens = 0
        self.finished_requests = 0
        self.cancelled_requests = 0
        self.failed_requests = 0
        self.batch_log: deque[tuple[tuple, int]] = deque(maxlen=4096)  # (adapters in the pass, rows) of recent decode passes
        self.rate = TokenRate()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str, adapters: dict[str, str] | None = None, dtype: str = "auto", device: str = "auto", **config) -> "BatchingEngine":
        """Load ``model`` (and each named LoRA adapter into one PEFT model) and build an engine."""
        from knowlm.infer.adapters import check_adapter_dir, load_adapters
        from knowlm.models import load

        unknown = set(config) - set(EngineConfig.__dataclass_fields__)
        if unknown:
            raise KnowlmError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        engine_config = EngineConfig(**config).validate()  # fail before the (slow) model load
        for name, path in (adapters or {}).items():
            check_adapter_dir(name, path)
        lm, tokenizer = load(model, dtype=dtype, device=device)
        adapters = dict(adapters or {})
        if adapters:
            lm = load_adapters(lm, adapters)
        return cls(lm, tokenizer, engine_config, adapter_paths=adapters)

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
        self._solo.stop("server is shutting down")
        self._fail_all("server is shutting down")  # anything the thread did not get to

    def busy(self) -> bool:
        return bool(self._waiting or self._rows or self._solo.busy())

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue a request; returns at once. Raises BackendError (400), QueueFullError (429), EngineStoppedError (503)."""
        params = request.params.validate()
        if request.adapter is not None and request.adapter not in self.adapter_paths:
            raise KnowlmError(f"unknown adapter {request.adapter!r}")
        check_token_ids(params, self.vocab_size)
        if request.logprobs is not None and not 0 <= request.logprobs <= self.config.max_logprobs:
            raise BackendError(f"logprobs must be in [0, {self.config.max_logprobs}]")
        if params.num_beams > 1 and (request.processors or request.logprobs is not None):
            raise BackendError("num_beams > 1 cannot be combined with constrained output or logprobs")
        ids = self.encode(request.prompt)
        if len(ids) >= self.max_context:
            raise PromptTooLongError(f"prompt has {len(ids)} tokens; the model's context is {self.max_context}")
        handle = RequestHandle(request, prompt_tokens=len(ids), loop=loop)
        request.params = params
        with self._cond:
            if not self._accepting or self._thread is None:
                raise EngineStoppedError("the engine is not accepting requests (shutting down)")
            if params.num_beams > 1:
                self._solo.submit(request, handle, ids)
                return handle
            if len(self._waiting) >= self.config.max_waiting:
                raise QueueFullError(f"too many queued requests ({len(self._waiting)}); retry later")
            self._waiting.append((request, handle, ids))
            self._cond.notify_all()
        return handle

    def generate(self, prompt: str, params: DecodingParams | None = None, adapter: str | None = None):
        """Convenience: submit and wait (thread callers)."""
        return self.submit(GenerationRequest(prompt, params or DecodingParams(), adapter)).result()

    def stats(self) -> dict:
        return {
            "backend": "hf",
            "waiting": len(self._waiting),
            "running": len(self._rows),
            "beam_waiting": self._solo.waiting,
            "beam_running": self._solo.running,
            "max_batch_size": self.config.max_batch_size,
            "decode_passes": self.decode_passes,
            "prefill_passes": self.prefill_passes,
            "batch_rows": sum(size * n for size, n in self.batch_histogram.items()),
            "max_rows_seen": self.max_rows_seen,
            "generated_tokens": self.generated_tokens,
            "finished_requests": self.finished_requests,
            "cancelled_requests": self.cancelled_requests,
            "failed_requests": self.failed_requests,
            "tokens_per_second_10s": self.rate.per_second(),
        }

    # -- engine thread --------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        if hasattr(self._kv, "warm_up"):
            try:
                self._kv.warm_up()  # compile before the first request waits for it
            except Exception:
                log.exception("warming up the compiled decode step failed")
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
            except Exception:  # a forward pass failed (e.g. out of memory): fail this batch, keep serving
                log.exception("engine step failed")
                self._fail_rows(FAILED)
        self._fail_all("server is shutting down")

    def _admit(self) -> None:
        """Move waiting requests into the running batch and prefill them together."""
        new: list[tuple[GenerationRequest, RequestHandle, list[int]]] = []
        with self._cond:
            for item in [w for w in self._waiting if w[1].cancelled.is_set()]:
                self._waiting.remove(item)
                item[1].push(Event(finished=True, finish_reason="cancelled", prompt_tokens=len(item[2])))
                self.cancelled_requests += 1
            while self._waiting and len(self._rows) + len(new) < self.config.max_batch_size:
                new.append(self._waiting.popleft())
        if new:
            self._prefill(new)

    def adapter_rows(self, adapters: str | list[str | None] | None):
        """Forward passes in this block (this thread) use these adapters per row (see AdapterRouter)."""
        return self.router.rows(adapters) if self.router is not None else nullcontext()

    def _forward(self, input_ids, attention_mask, position_ids, cache, adapters: list[str | None]):
        """Next-token logits of each row; ``cache`` (a ``DynamicCache``) is extended in place."""
        import torch

        with self.adapter_rows(adapters), torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                             logits_to_keep=1, **{self._cache_kwarg: cache})
        return out.logits[:, -1, :].float()

    def _forward_decode(self, tokens: list[int], lengths: list[int], adapters: list[str | None]):
        """One decode step of the running batch (separate from prefill so benches can time it)."""
        return self._kv.decode(tokens, lengths, partial(self._forward, adapters=adapters))

    def _prefill(self, items) -> None:
        import torch
        from transformers import DynamicCache

        device = self.device()
        width = max(len(ids) for _, _, ids in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (_, _, ids) in enumerate(items):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(input_ids, mask, positions, cache, [request.adapter for request, _, _ in items])
        self.prefill_passes += 1
        rows = []
        for request, handle, ids in items:
            p = request.params
            rng = row_generator(p.seed, device) if p.sampling else None
            rows.append(_Row(handle, ids, p, request.adapter, rng, hold_back_ids(self.eos_ids, p), length=len(ids),
                             text=IncrementalText(self.tokenizer, self._byte_ids)))
        with torch.inference_mode():
            self._kv.admit(cache, mask, [len(ids) for _, _, ids in items], [row.length for row in self._rows])
        self._logits = logits if not self._rows else torch.cat([self._logits, logits], dim=0)
        self._rows = self._rows + rows
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _step(self) -> None:
        import torch

        tokens, failures = choose_tokens(self._logits, self._rows, self.eos_ids, FAILED)
        keep: list[int] = []
        step_tokens = 0
        for i, (row, token) in enumerate(zip(self._rows, tokens)):
            if row.handle.cancelled.is_set():
                self._finish(row, "cancelled")
                continue
            if i in failures:
                self._fail(row, failures[i])
                continue
            reason = self._advance(row, token)
            step_tokens += reason != "eos"
            text = row.text.update(row.generated)
            if reason is None and row.params.stop and len(row.generated) >= row.params.min_new_tokens:
                cut, hit = cut_at_stop(text, row.params.stop)
                if hit:
                    text, reason = cut, "stop"
            if reason is None and (len(row.generated) >= row.params.max_new_tokens or row.length + 1 >= self.max_context):
                reason = "length"
            if reason is None:
                safe = streamable_prefix(row.text.stable, row.params.stop)
                if safe > row.emitted or row.logprobs:
                    row.handle.push(Event(text=text[row.emitted : safe], num_tokens=len(row.generated), prompt_tokens=len(row.prompt_ids), logprobs=self._take_logprobs(row)))
                    row.emitted = max(row.emitted, safe)
                keep.append(i)
            else:
                self._finish(row, "stop" if reason == "eos" else reason, text)
        self.generated_tokens += step_tokens
        self.rate.add(step_tokens)

        if not keep:
            self._clear()
            return
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._kv.keep(keep, [row.length for row in self._rows])
            tokens = [tokens[i] for i in keep]
        adapters = [row.adapter for row in self._rows]
        self._logits = self._forward_decode(tokens, [row.length for row in self._rows], adapters)
        for row in self._rows:
            row.length += 1
        self.decode_passes += 1
        self.batch_histogram[len(self._rows)] += 1
        self.batch_log.append((tuple(sorted({a or "" for a in adapters})), len(self._rows)))

    def _advance(self, row: _Row, token: int) -> str | None:
        """Add ``token`` to the row's answer; "eos" (not part of the answer) or "stop" (a stop token id) end it."""
        if token in self.eos_ids and token not in row.params.stop_token_ids:
            return "eos"
        row.generated.append(token)
        return "stop" if token in row.params.stop_token_ids else None

    @staticmethod
    def _take_logprobs(row: _Row) -> list | None:
        if row.handle.request.logprobs is None:
            return None
        taken, row.logprobs = row.logprobs, []
        return taken

    def _finish(self, row: _Row, reason: str, text: str | None = None) -> None:
        delta = text[row.emitted :] if text is not None and len(text) > row.emitted else ""
        row.handle.push(
            Event(text=delta, num_tokens=len(row.generated), finished=True, finish_reason=reason, prompt_tokens=len(row.prompt_ids),
                  logprobs=self._take_logprobs(row))
        )
        self.finished_requests += 1
        self.cancelled_requests += reason == "cancelled"

    def _fail(self, row: _Row, error: RowError) -> None:
        row.handle.push(Event(error=error.message, status=error.status, num_tokens=len(row.generated), prompt_tokens=len(row.prompt_ids)))
        self.failed_requests += 1

    def device(self):
        return next(self.model.parameters()).device

    def _fail_rows(self, message: str, status: int = 500) -> None:
        for row in self._rows:
            row.handle.push(Event(error=message, status=status, prompt_tokens=len(row.prompt_ids)))
        self._clear()

    def _clear(self) -> None:
        self._rows, self._logits = [], None
        self._kv.clear()

    def _fail_all(self, message: str) -> None:
        self._fail_rows(message, status=503)
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for _, handle, ids in waiting:
            handle.push(Event(error=message, status=503, prompt_tokens=len(ids)))
