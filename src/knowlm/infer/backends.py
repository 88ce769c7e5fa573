"""What every serving backend shares: requests, streamed events, handles, errors.

A backend (the batching Hugging Face engine or vLLM) takes a :class:`GenerationRequest`
and returns a :class:`RequestHandle` at once; tokens arrive on the handle as
:class:`Event` objects while the backend keeps batching other requests. The handle can be
consumed from a plain thread (``for event in handle``) or from asyncio
(``async for event in handle``), and cancelled when the client goes away.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Protocol

from knowlm.errors import KnowlmError
from knowlm.decoding import DecodingParams
from knowlm.infer.generator import Generation


class BackendError(KnowlmError):
    """A request the backend refuses; ``status`` is the HTTP status the server answers with."""

    status = 400


class QueueFullError(BackendError):
    status = 429


class EngineStoppedError(BackendError):
    status = 503


class PromptTooLongError(BackendError):
    status = 400


_ids = itertools.count(1)


@dataclass
class GenerationRequest:
    prompt: str
    params: DecodingParams = field(default_factory=DecodingParams)
    adapter: str | None = None  # LoRA adapter name; None = base model
    processors: list | None = None  # HF-style logits processors for this one prompt (constrained decoding)
    logprobs: int | None = None  # report each token's log-probability and this many alternatives
    request_id: str = field(default_factory=lambda: f"req-{next(_ids)}")


@dataclass
class Event:
    """A piece of one request's output. The last event has ``finished=True`` (or ``error`` set)."""

    text: str = ""  # new text since the previous event
    num_tokens: int = 0  # generated tokens so far
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    error: str | None = None
    status: int = 500  # HTTP status to use when error is set
    logprobs: list | None = None  # (token id, logprob, [(id, logprob), ...]) of the tokens since the last event


class RequestHandle:
    """The caller's side of one request: a stream of events, a result, and cancel().

    Events are pushed by the backend thread; an asyncio consumer gets them through its own
    event loop (``call_soon_threadsafe``), a thread consumer through a ``queue.Queue``.
    """

    def __init__(self, request: GenerationRequest, prompt_tokens: int, loop: asyncio.AbstractEventLoop | None = None):
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self._loop = loop
        self._aqueue: asyncio.Queue | None = asyncio.Queue() if loop is not None else None
        self._queue: queue.Queue = queue.Queue()
        self._text: list[str] = []
        self._logprobs: list | None = [] if request.logprobs is not None else None
        self.final: Event | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def cancel(self) -> None:
        """Stop generating for this request; the backend frees its slot at the next step."""
        self.cancelled.set()

    # -- producer side (backend thread) ------------------------------------------------------
    def push(self, event: Event) -> None:
        if self.done.is_set():
            return
        if event.text:
            self._text.append(event.text)
        if event.logprobs and self._logprobs is not None:
            self._logprobs.extend(event.logprobs)
        if event.finished or event.error:
            self.final = event
            self.done.set()
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, event)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
                self.cancel()
        else:
            self._queue.put(event)

    # -- consumer side ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Event]:
        if self._loop is not None:
            raise RuntimeError("this handle was created for asyncio; use 'async for'")
        while True:
            event = self._queue.get()
            yield event
            if event.finished or event.error:
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._aqueue is None:
            raise RuntimeError("this handle was created without an event loop; iterate it synchronously")
        while True:
            event = await self._aqueue.get()
            yield event
            if event.finished or event.error:
                return

    def _result(self) -> Generation:
        final = self.final
        assert final is not None
        if final.error:
            error = BackendError(final.error)
            error.status = final.status
            raise error
        return Generation(
            text="".join(self._text),
            num_tokens=final.num_tokens,
            finish_reason=final.finish_reason or "stop",
            prompt_tokens=self.prompt_tokens,
            logprobs=self._logprobs,
        )

    def result(self) -> Generation:
        """Block until the request is finished (thread consumers)."""
        for _ in self:
            pass
        return self._result()

    async def aresult(self) -> Generation:
        """Wait until the request is finished (asyncio consumers)."""
        async for _ in self:
            pass
        return self._result()


class Backend(Protocol):
    """The interface the server, web UI and extraction adapter program against."""

    tokenizer: Any
    adapters: list[str]
    max_context: int
    vocab_size: int

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle: ...

    def count_tokens(self, text: str) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def stats(self) -> dict: ...


class TokenizerAccess:
    """``encode``/``decode``/``count_tokens`` of a backend: a fast tokenizer must not be used from two
    threads at once, so every call takes ``self._tok_lock`` (a ``threading.Lock`` the backend creates)."""

    tokenizer: Any
    _tok_lock: threading.Lock

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        with self._tok_lock:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)


class TokenRate:
    """Tokens generated per second over the last ``window_s`` seconds (``/metrics``, ``stats()``)."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._recent: deque[tuple[float, int]] = deque()

    def add(self, tokens: int) -> None:
        now = time.monotonic()
        self._recent.append((now, tokens))
        while self._recent and now - self._recent[0][0] > self.window_s:
            self._recent.popleft()

    def per_second(self) -> float:
        now = time.monotonic()
        return sum(n for t, n in list(self._recent) if now - t <= self.window_s) / self.window_s


@dataclass
class EngineOptions:
    """How to run a backend; each backend takes the options that apply to it."""

    dtype: str = "auto"
    device: str = "auto"  # hf
    max_batch_size: int = 16  # rows decoded together (vllm: max_num_seqs)
    max_waiting: int = 256  # queued requests before 429
    num_threads: int | None = None  # hf: intra-op threads of the engine thread
    tensor_parallel_size: int = 1  # vllm
    gpu_memory_utilization: float = 0.9  # vllm
    compile: bool = False  # hf: static KV cache slots, decode step compiled with CUDA graphs on a GPU
    cache_len: int | None = None  # hf with compile: tokens of context per slot (default: the model's)


BACKENDS = ("hf", "vllm")


def make_backend(kind: str, model: str, adapters: dict[str, str] | None = None, options: EngineOptions | None = None) -> Backend:
    """Build the backend named ``kind`` ("hf" or "vllm") for ``model`` with named LoRA ``adapters``.

    The one place a backend name becomes an engine (``knowlm serve``, ``knowlm webui``, benches).
    """
    o = options or EngineOptions()
    if kind == "hf":
        from knowlm.infer.batching import BatchingEngine

        return BatchingEngine.from_pretrained(
            model, adapters=adapters, dtype=o.dtype, device=o.device,
            max_batch_size=o.max_batch_size, max_waiting=o.max_waiting, num_threads=o.num_threads, compile=o.compile,
            cache_len=o.cache_len,
        )
    if kind == "vllm":
        from knowlm.infer.vllm_backend import VllmEngine

        if o.compile:
            raise KnowlmError("--compile is for --backend hf (vLLM compiles its decode step on its own)")

        return VllmEngine.from_pretrained(
            model, adapters=adapters, dtype=o.dtype, tensor_parallel_size=o.tensor_parallel_size,
            gpu_memory_utilization=o.gpu_memory_utilization, max_batch_size=o.max_batch_size, max_waiting=o.max_waiting,
        )
    raise KnowlmError(f"unknown backend {kind!r}; choose one of: {', '.join(BACKENDS)}")
