"""vLLM backend (``knowlm serve --backend vllm``): the same interface as the batching engine,
mapped onto vLLM's ``AsyncLLMEngine`` (``vllm.v1.engine.async_llm.AsyncLLM`` in vLLM >= 0.8).

vLLM is CUDA-only; it is imported lazily so the rest of knowlm never needs it, and a missing
package or GPU gives one clear error. vLLM runs its own continuous batching with paged
attention; this module only translates requests, parameters, LoRA adapters and streaming:

* the engine lives on a private asyncio loop in a thread, so callers on any thread or loop
  can ``submit()`` and consume the :class:`RequestHandle` exactly as with the HF backend;
* ``DecodingParams`` -> ``SamplingParams``; adapters -> ``LoRARequest`` (``enable_lora``);
* a cancelled handle aborts the vLLM request at its next output.

Not supported here (clear 400s): beam search and per-request logits processors
(``/extract --constrained``, ``response_format``), which vLLM handles through its own structured-output API.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

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
from knowlm.decoding import DecodingParams
from knowlm.infer.engine import check_token_ids

log = logging.getLogger("knowlm.infer.vllm")


def _require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise KnowlmError("--backend vllm needs vLLM and a CUDA GPU: pip install 'knowlm[gpu]' (or use --backend hf)") from None
    import torch

    if not torch.cuda.is_available():
        raise KnowlmError("--backend vllm needs a CUDA GPU and none is visible; use --backend hf on this machine")
    return vllm


def start_error(exc: BaseException) -> KnowlmError:
    """One line for vLLM failing to start (it reports CUDA, memory and config problems as assorted exceptions)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return KnowlmError(f"vLLM could not start: {type(exc).__name__}: {first}")


def model_limits(path: str) -> tuple[int, int | None]:
    """(context length, vocabulary size) from the model's ``config.json``."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return int(getattr(config, "max_position_embeddings", None) or 2048), getattr(config, "vocab_size", None)


def json_output(schema: dict) -> dict:
    """The ``SamplingParams`` keyword that constrains output to JSON matching ``schema``:
    ``structured_outputs=StructuredOutputsParams(json=...)`` (current vLLM), else the older releases'
    ``guided_decoding=GuidedDecodingParams(json=...)``."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


def compact_json_engine_args() -> dict:
    """Engine arguments that make vLLM compile a JSON schema exactly as ``knowlm.ie.constrained`` does:
    xgrammar without free whitespace (so separators are ``", "`` and ``": "``, what models are tuned on)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams  # noqa: F401
    except ImportError:
        return {"guided_decoding_backend": "xgrammar:disable-any-whitespace"}
    return {"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}


def sampling_params(p: DecodingParams, logprobs: int | None = None, json_schema: dict | None = None):
    """DecodingParams -> vllm.SamplingParams (n=1); ``json_schema``: structured JSON output."""
    from vllm import SamplingParams

    if p.num_beams > 1:
        raise BackendError("num_beams > 1 is not supported by the vllm backend")
    return SamplingParams(
        n=1,
        temperature=p.temperature if p.sampling else 0.0,
        top_p=p.top_p if p.sampling else 1.0,
        top_k=p.top_k if (p.sampling and p.top_k > 0) else -1,
        max_tokens=p.max_new_tokens,
        min_tokens=p.min_new_tokens,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
        logit_bias=dict(p.logit_bias) or None,
        stop=list(p.stop) or None,
        stop_token_ids=list(p.stop_token_ids) or None,
        seed=None if p.seed is None else p.seed % 2**63,
        logprobs=logprobs,
        **(json_output(json_schema) if json_schema is not None else {}),
    )


def _logprobs(completion, start: int, top: int | None) -> list | None:
    """vLLM's per-token logprob dicts from token ``start`` on -> (token, logprob, [(id, logprob)...])."""
    if top is None or not completion.logprobs:
        return None
    entries = []
    for token, candidates in zip(completion.token_ids[start:], completion.logprobs[start:]):
        ranked = sorted(candidates.items(), key=lambda kv: kv[1].logprob, reverse=True)
        entries.append((token, candidates[token].logprob, [(t, lp.logprob) for t, lp in ranked[:top]]))
    return entries


class VllmEngine(TokenizerAccess):
    """Backend over ``vllm.AsyncLLMEngine``; see the module docstring."""

    def __init__(self, engine, tokenizer, max_context: int, adapter_paths: dict[str, str] | None = None, max_inflight: int = 272,
                 loop=None, thread=None, vocab_size: int | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.vocab_size = int(vocab_size or len(tokenizer))
        self.adapter_paths = dict(adapter_paths or {})
        self.adapters = list(self.adapter_paths)
        self.max_inflight = max_inflight
        self._loop = loop
        self._thread = thread
        self._lock = threading.Lock()
        self._tok_lock = threading.Lock()  # a fast tokenizer must not be used from two threads at once
        self._inflight: dict[str, RequestHandle] = {}
        self._accepting = True
        self._lora = {}
        if self.adapter_paths:
            from vllm.lora.request import LoRARequest

            self._lora = {name: LoRARequest(name, index + 1, path) for index, (name, path) in enumerate(self.adapter_paths.items())}
        self.generated_tokens = 0
        self.finished_requests = 0
        self.rate = TokenRate()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        adapters: dict[str, str] | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_batch_size: int = 256,
        max_waiting: int = 256,
        max_lora_rank: int = 64,
        **_: Any,
    ) -> "VllmEngine":
        _require_vllm()
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from knowlm.models import load_tokenizer, resolve_model_path

        path = resolve_model_path(model)
        adapters = dict(adapters or {})
        args = AsyncEngineArgs(
            model=path,
            tokenizer=path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_batch_size,
            enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)),
            max_lora_rank=max_lora_rank,
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="knowlm-vllm", daemon=True)
        thread.start()

        async def build():
            return AsyncLLMEngine.from_engine_args(args)

        try:
            engine = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except Exception as exc:  # noqa: BLE001 - see start_error
            loop.call_soon_threadsafe(loop.stop)
            raise start_error(exc) from None
        context, vocab_size = model_limits(path)
        return cls(engine, load_tokenizer(path), context, adapters, max_inflight=max_batch_size + max_waiting, loop=loop, thread=thread,
                   vocab_size=vocab_size)

    # -- Backend interface ------------------------------------------------------------------
    def start(self) -> "VllmEngine":
        return self  # the engine runs from construction

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        params = request.params.validate()
        if request.processors:
            raise BackendError("constrained output (/extract constrained, response_format) is not supported by the vllm backend")
        if request.adapter is not None and request.adapter not in self._lora:
            raise KnowlmError(f"unknown adapter {request.adapter!r}")
        check_token_ids(params, self.vocab_size)
        sampling = sampling_params(params, request.logprobs)
        count = self.count_tokens(request.prompt)
        if count >= self.max_context:
            raise PromptTooLongError(f"prompt has {count} tokens; the model's context is {self.max_context}")
        handle = RequestHandle(request, prompt_tokens=count, loop=loop)
        with self._lock:
            if not self._accepting or self._loop is None:
                raise EngineStoppedError("the engine is not accepting requests (shutting down)")
            if len(self._inflight) >= self.max_inflight:
                raise QueueFullError(f"too many requests in flight ({len(self._inflight)}); retry later")
            self._inflight[request.request_id] = handle
        asyncio.run_coroutine_threadsafe(self._run(request, handle, sampling), self._loop)
        return handle

    async def _run(self, request: GenerationRequest, handle: RequestHandle, sampling) -> None:
        emitted, tokens = 0, 0
        try:
            stream = self.engine.generate(request.prompt, sampling, request.request_id, lora_request=self._lora.get(request.adapter))
            async for output in stream:
                if handle.cancelled.is_set():
                    await self.engine.abort(request.request_id)
                    handle.push(Event(text="", num_tokens=tokens, finished=True, finish_reason="cancelled", prompt_tokens=handle.prompt_tokens))
                    return
                completion = output.outputs[0]
                previous, text, tokens = tokens, completion.text, len(completion.token_ids)
                delta = text[emitted:]
                emitted = len(text)
                logprobs = _logprobs(completion, previous, request.logprobs)
                if output.finished:
                    reason = completion.finish_reason if completion.finish_reason in ("stop", "length") else "stop"
                    handle.push(Event(text=delta, num_tokens=tokens, finished=True, finish_reason=reason, prompt_tokens=handle.prompt_tokens, logprobs=logprobs))
                    return
                if delta or logprobs:
                    handle.push(Event(text=delta, num_tokens=tokens, prompt_tokens=handle.prompt_tokens, logprobs=logprobs))
            handle.push(Event(num_tokens=tokens, finished=True, finish_reason="stop", prompt_tokens=handle.prompt_tokens))
        except Exception:  # report to this request only (no internals); the engine keeps serving others
            log.exception("vllm request %s failed", request.request_id)
            handle.push(Event(error="generation failed for this request", status=500, prompt_tokens=handle.prompt_tokens))
        finally:
            with self._lock:
                self._inflight.pop(request.request_id, None)
            self.generated_tokens += tokens
            self.finished_requests += 1
            self.rate.add(tokens)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._accepting = False
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        for handle in list(self._inflight.values()):
            handle.cancel()
            handle.push(Event(error="server is shutting down", status=503, prompt_tokens=handle.prompt_tokens))
        if self._loop is not None:
            shutdown = getattr(self.engine, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # best effort on the way out
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None

    def stats(self) -> dict:
        return {
            "backend": "vllm",
            "waiting": 0,
            "running": len(self._inflight),
            "generated_tokens": self.generated_tokens,
            "finished_requests": self.finished_requests,
            "tokens_per_second_10s": self.rate.per_second(),
        }
